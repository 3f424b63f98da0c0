"""Hypoperfusion lesions and their overlap.

The lesion of a Tmax map is Tmax > threshold (6 s by default, config key
``lesion.tmax_threshold_s``) inside the brain mask (DESIGN.md).

Conventions
-----------
* Dice and IoU of two empty lesions are 1.0 (both agree there is no lesion); with one
  empty and the other not they are 0.0.
* HD95 is NaN when either lesion is empty (no surface to measure from).
* HD95 is the symmetric 95th-percentile Hausdorff distance between the two lesion
  *surfaces* (voxels of the lesion with a face-neighbour outside it), in mm:
  max(P95 of distances A→B, P95 of distances B→A), as in DeepMind's ``surface-distance``
  and MONAI. A one-voxel shift gives the voxel size along the shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from bolus.config import schema_defaults
from bolus.evaluate.metrics import as_mask


def default_tmax_threshold_s() -> float:
    """The configured default lesion threshold (schema ``lesion.tmax_threshold_s``)."""
    return float(schema_defaults()["lesion"]["tmax_threshold_s"])


def hypoperfusion_mask(
    tmax_s: np.ndarray, brain_mask: np.ndarray, threshold_s: float | None = None
) -> np.ndarray:
    """Boolean lesion: Tmax (s) > ``threshold_s`` inside the brain (NaN voxels excluded).

    ``threshold_s`` None takes the config schema default (6 s)."""
    if threshold_s is None:
        threshold_s = default_tmax_threshold_s()
    tmax = np.asarray(tmax_s, dtype=np.float64)
    brain = as_mask(brain_mask)
    if tmax.shape != brain.shape:
        raise ValueError(f"Tmax map {tmax.shape} and brain mask {brain.shape} differ in shape")
    with np.errstate(invalid="ignore"):
        return brain & np.isfinite(tmax) & (tmax > threshold_s)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A∩B| / (|A| + |B|); 1.0 when both are empty."""
    a, b = as_mask(a), as_mask(b)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(a, b).sum() / total)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union |A∩B| / |A∪B|; 1.0 when both are empty."""
    a, b = as_mask(a), as_mask(b)
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face-neighbour outside it (or the array)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hd95(a: np.ndarray, b: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between the surfaces of A and B.

    Vectorised with Euclidean distance transforms (anisotropic ``spacing_mm``), on the
    two lesions' joint bounding box. NaN when either is empty; 0 for identical masks.
    """
    a, b = as_mask(a), as_mask(b)
    if a.shape != b.shape:
        raise ValueError(f"lesion masks differ in shape: {a.shape} vs {b.shape}")
    if not a.any() or not b.any():
        return float("nan")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != a.ndim:
        raise ValueError(f"spacing_mm {spacing_mm} does not match {a.ndim}D masks")
    # crop to the joint box, padded by one voxel so that a lesion touching the crop's
    # edge still has its surface there
    union = a | b
    box = []
    for axis in range(a.ndim):
        other = tuple(x for x in range(a.ndim) if x != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    box = tuple(box)
    a = np.pad(a[box], 1)
    b = np.pad(b[box], 1)
    surface_a, surface_b = _surface(a), _surface(b)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing)
    return float(max(np.percentile(to_b[surface_a], 95), np.percentile(to_a[surface_b], 95)))


def volume_ml(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Volume of a mask in ml (voxel count × voxel volume in mm³ / 1000)."""
    return float(as_mask(mask).sum() * np.prod([float(s) for s in spacing_mm]) / 1000.0)


def lesion_metrics(
    tmax_pred: np.ndarray,
    tmax_ref: np.ndarray,
    brain_mask: np.ndarray,
    threshold_s: float | None,
    spacing_mm: Sequence[float],
) -> dict[str, float]:
    """Agreement of the Tmax > threshold lesions of a prediction and its reference.

    Keys: ``dice iou hd95`` (conventions in the module docstring), ``volume_pred_ml``,
    ``volume_ref_ml``. ``threshold_s`` None takes the config default; ``spacing_mm`` is
    the voxel size (e.g. :func:`bolus.io.nifti.voxel_size_mm` of the map's affine).
    """
    pred = hypoperfusion_mask(tmax_pred, brain_mask, threshold_s)
    ref = hypoperfusion_mask(tmax_ref, brain_mask, threshold_s)
    return {
        "dice": dice(pred, ref),
        "iou": iou(pred, ref),
        "hd95": hd95(pred, ref, spacing_mm),
        "volume_pred_ml": volume_ml(pred, spacing_mm),
        "volume_ref_ml": volume_ml(ref, spacing_mm),
    }
