"""Hypoperfusion lesions and their overlap.

The lesion of a Tmax map is Tmax > threshold (6 s by default, config key
``lesion.tmax_threshold_s``) inside the brain mask.

Conventions
-----------
* Dice and IoU of two empty lesions are 1.0 (both agree there is no lesion); with one
  empty and the other not they are 0.0.
* HD95 is NaN when either lesion is empty (no surface to measure from).
* HD95 is the symmetric 95th-percentile Hausdorff distance between the two lesion
  *surfaces* (voxels of the lesion with a face-neighbour outside it), in mm:
  max(P95 of distances A→B, P95 of distances B→A), as in DeepMind's ``surface-distance``
  and MONAI. A one-voxel shift gives the voxel size along the shift.

ROC analysis (:func:`roc_auc`, :func:`youden_threshold`)
-------------------------------------------------------
The method's Tmax is scored as a classifier of the reference lesion (reference Tmax >
threshold) over the brain voxels where the reference is finite; a voxel where the method's
Tmax is not finite is scored −inf (never called lesion, as in :func:`hypoperfusion_mask`).

* AUC is the Mann–Whitney statistic from ranks (ties count ½): the probability that a
  random lesion voxel has a higher Tmax than a random non-lesion voxel. NaN when the
  reference has no lesion or no non-lesion voxel.
* The ROC-chosen threshold maximises Youden's J = sensitivity + specificity − 1 over every
  cut between two distinct Tmax values (the threshold reported is the midpoint between them,
  so ``Tmax > threshold`` reproduces the cut); ties of J take the highest threshold. It is
  chosen per subject and method against that subject's reference, as in the published
  comparisons of optimal thresholds, so its Dice is an optimistic (best case) agreement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

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


def roc_samples(
    tmax_pred: np.ndarray, tmax_ref: np.ndarray, brain_mask: np.ndarray, threshold_s: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(score, truth) over the brain voxels where the reference Tmax is finite: the
    method's Tmax (non-finite → −inf) and whether the reference marks a lesion there."""
    if threshold_s is None:
        threshold_s = default_tmax_threshold_s()
    pred = np.asarray(tmax_pred, dtype=np.float64)
    ref = np.asarray(tmax_ref, dtype=np.float64)
    brain = as_mask(brain_mask)
    if not (pred.shape == ref.shape == brain.shape):
        raise ValueError(
            f"Tmax maps {pred.shape}, {ref.shape} and brain mask {brain.shape} differ in shape"
        )
    voxels = brain & np.isfinite(ref)
    score = pred[voxels]
    score = np.where(np.isfinite(score), score, -np.inf)
    return score, ref[voxels] > threshold_s


def roc_auc(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` as a classifier of boolean ``truth``, from
    ranks (Mann–Whitney U / (n₊·n₋), ties ½); NaN without both classes."""
    score = np.asarray(score, dtype=np.float64).ravel()
    truth = np.asarray(truth, dtype=bool).ravel()
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    u = ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def youden_threshold(score: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(threshold, J): the cut ``score > threshold`` maximising Youden's J = TPR − FPR.

    Every cut between two distinct scores is tried at once (cumulative counts over the
    sorted distinct values); the threshold is the midpoint of the two scores it separates.
    (NaN, NaN) without both classes.
    """
    score = np.asarray(score, dtype=np.float64).ravel()
    truth = np.asarray(truth, dtype=bool).ravel()
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan")
    values, index = np.unique(score, return_inverse=True)  # ascending
    pos = np.bincount(index, weights=truth, minlength=values.size)
    neg = np.bincount(index, weights=~truth, minlength=values.size)
    # cut k (1 ≤ k < len(values)): lesion = score ≥ values[k], i.e. > midpoint(k−1, k)
    tpr = np.cumsum(pos[::-1])[::-1][1:] / n_pos
    fpr = np.cumsum(neg[::-1])[::-1][1:] / n_neg
    if tpr.size == 0:  # one distinct score: nothing separates the classes
        return float("nan"), 0.0
    j = tpr - fpr
    # the highest threshold among ties (equal J up to rounding of the two fractions)
    best = int(np.flatnonzero(j >= j.max() - 1e-12)[-1])
    # the midpoint; −inf when the cut only leaves out the failed (−inf) voxels, which
    # hypoperfusion_mask then reproduces (every finite Tmax > −inf)
    threshold = (values[best] + values[best + 1]) / 2.0
    return float(threshold), float(j[best])


def _overlap(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    return {
        "dice": dice(pred, ref),
        "iou": iou(pred, ref),
        "hd95": hd95(pred, ref, spacing_mm),
        "volume_pred_ml": volume_ml(pred, spacing_mm),
        "volume_ref_ml": volume_ml(ref, spacing_mm),
    }


#: keys of :func:`lesion_metrics`, in table order
LESION_AGREEMENT = (
    "dice",
    "iou",
    "hd95",
    "volume_pred_ml",
    "volume_ref_ml",
    "volume_diff_ml",
    "auc",
    "roc_threshold_s",
    "dice_roc",
    "iou_roc",
    "hd95_roc",
    "volume_diff_roc_ml",
)


def lesion_metrics(
    tmax_pred: np.ndarray,
    tmax_ref: np.ndarray,
    brain_mask: np.ndarray,
    threshold_s: float | None,
    spacing_mm: Sequence[float],
) -> dict[str, float]:
    """Agreement of a method's hypoperfusion lesion with the reference's.

    Keys (:data:`LESION_AGREEMENT`): at the configured threshold ``dice iou hd95``
    (conventions in the module docstring), ``volume_pred_ml``, ``volume_ref_ml`` and
    ``volume_diff_ml`` (= pred − ref); ``auc`` of the method's Tmax as a classifier of the
    reference lesion; at the method's ROC-chosen (Youden) threshold ``roc_threshold_s`` and
    ``dice_roc iou_roc hd95_roc volume_diff_roc_ml`` (NaN when the reference has no lesion).
    The reference lesion is always the reference's Tmax > ``threshold_s``. ``threshold_s``
    None takes the config default; ``spacing_mm`` is the voxel size (e.g.
    :func:`bolus.io.nifti.voxel_size_mm` of the map's affine).
    """
    if threshold_s is None:
        threshold_s = default_tmax_threshold_s()
    ref = hypoperfusion_mask(tmax_ref, brain_mask, threshold_s)
    pred = hypoperfusion_mask(tmax_pred, brain_mask, threshold_s)
    result = _overlap(pred, ref, spacing_mm)
    result["volume_diff_ml"] = result["volume_pred_ml"] - result["volume_ref_ml"]
    score, truth = roc_samples(tmax_pred, tmax_ref, brain_mask, threshold_s)
    result["auc"] = roc_auc(score, truth)
    threshold, _ = youden_threshold(score, truth)
    result["roc_threshold_s"] = threshold
    if np.isnan(threshold):
        result.update(dice_roc=np.nan, iou_roc=np.nan, hd95_roc=np.nan, volume_diff_roc_ml=np.nan)
    else:
        tuned = hypoperfusion_mask(tmax_pred, brain_mask, threshold)
        agreement = _overlap(tuned, ref, spacing_mm)
        result.update(
            dice_roc=agreement["dice"],
            iou_roc=agreement["iou"],
            hd95_roc=agreement["hd95"],
            volume_diff_roc_ml=agreement["volume_pred_ml"] - agreement["volume_ref_ml"],
        )
    return {k: float(result[k]) for k in LESION_AGREEMENT}
