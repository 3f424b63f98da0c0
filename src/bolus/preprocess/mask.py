"""Brain mask: the MNI152 brain mask propagated with ANTs, refined on the data.

1. A first estimate from the data: tissue above Otsu's threshold of the temporal median
   volume, separated from the scalp by an in-plane erosion, largest component, grown back.
2. The MNI152 T1 template that ships with nilearn (brain only) is registered to that
   skull-stripped volume with ANTs (affine, mutual information: the contrasts differ), and
   its brain mask follows (nearest neighbour); it bounds the estimate.
3. Refinement: signal voids below a fraction of the median brain signal are dropped, holes
   are filled slice by slice, and only the largest connected component is kept.

Both steps work in world coordinates: the NIfTI affines carry the geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

SIGNAL_FLOOR = 0.25  # fraction of the median in-mask baseline signal below which a voxel is air


def _ants_from_nifti(data: np.ndarray, affine: np.ndarray):
    """An ANTs image with the NIfTI geometry (ANTs works in LPS; NIfTI in RAS)."""
    import ants

    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction_ras = affine[:3, :3] / zooms
    lps = np.diag([-1.0, -1.0, 1.0])
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=tuple(lps @ affine[:3, 3]),
        spacing=tuple(zooms),
        direction=lps @ direction_ras,
    )


def template_brain_mask(mean_volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The MNI152 brain mask, registered (affine, ANTs, mutual information) onto
    ``mean_volume``'s grid. The template is brain only: give a skull-stripped volume."""
    import ants
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2)
    template_mask = datasets.load_mni152_brain_mask(resolution=2)
    fixed = _ants_from_nifti(mean_volume, affine)
    moving = _ants_from_nifti(np.asanyarray(template.dataobj), template.affine)
    moving_mask = _ants_from_nifti(np.asanyarray(template_mask.dataobj), template_mask.affine)
    ants.config.set_ants_deterministic(True, 1)
    registration = ants.registration(fixed, moving, type_of_transform="Affine", aff_metric="mattes")
    warped = ants.apply_transforms(
        fixed, moving_mask, registration["fwdtransforms"], interpolator="nearestNeighbor"
    )
    for path in set(registration["fwdtransforms"]) | set(registration["invtransforms"]):
        Path(path).unlink(missing_ok=True)
    return warped.numpy() > 0.5


def _in_plane(iterations: int) -> np.ndarray:
    """Structuring element acting within slices (DSC slices are thick and few)."""
    return ndimage.iterate_structure(
        ndimage.generate_binary_structure(3, 1) * np.array([0, 1, 0])[None, None, :], iterations
    )


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.binary_fill_holes(mask[..., z]) for z in range(mask.shape[2])], -1)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


def data_brain_estimate(mean_volume: np.ndarray) -> np.ndarray:
    """Brain from the image alone: tissue above Otsu's threshold, cut from scalp by an
    in-plane erosion (the dark skull separates them), largest component, grown back."""
    from skimage.filters import threshold_otsu

    tissue = mean_volume > threshold_otsu(mean_volume)
    core = _largest_component(ndimage.binary_erosion(tissue, _in_plane(1)))
    grown = ndimage.binary_dilation(core, _in_plane(1)) & tissue
    return _fill_slices(grown)


def refine_mask(mask: np.ndarray, mean_volume: np.ndarray) -> np.ndarray:
    """Drop air and signal voids, fill holes per slice, keep the largest component."""
    mask = mask.astype(bool)
    if not mask.any():
        return mask
    floor = SIGNAL_FLOOR * float(np.median(mean_volume[mask]))
    return _largest_component(_fill_slices(mask & (mean_volume > floor)))


def brain_mask(series: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Brain mask of a 4D series (x, y, z, t) in its own grid (bool).

    The data estimate skull-strips the median volume; the MNI152 mask registered onto that
    stripped volume then bounds it (one voxel of tolerance), which removes what the image
    alone cannot tell from brain (eyes, neck, scalp touching the brain).
    """
    mean_volume = np.median(series, axis=-1) if series.ndim == 4 else series
    estimate = data_brain_estimate(mean_volume)
    if not estimate.any():
        return estimate
    propagated = template_brain_mask(np.where(estimate, mean_volume, 0.0), affine)
    bounded = estimate & ndimage.binary_dilation(propagated, _in_plane(1))
    return refine_mask(bounded, mean_volume)
