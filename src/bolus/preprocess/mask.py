"""Brain mask: the MNI152 brain mask propagated with ANTs, refined on the data.

1. The MNI152 T1 template that ships with nilearn is registered to the subject's mean
   (motion-corrected) DSC volume with ANTs (rigid then affine, mutual information: the
   contrasts differ), and the template's brain mask follows it (nearest neighbour).
2. Refinement on the data: voxels whose signal is below a fraction of the robust brain
   intensity (signal voids, air, skull) are dropped, holes are filled slice by slice, and
   only the largest connected component is kept.

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
    """The MNI152 brain mask, registered (affine, ANTs) onto ``mean_volume``'s grid."""
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


def refine_mask(mask: np.ndarray, mean_volume: np.ndarray) -> np.ndarray:
    """Drop air and signal voids, fill holes per slice, keep the largest component."""
    mask = mask.astype(bool)
    if not mask.any():
        return mask
    floor = SIGNAL_FLOOR * float(np.median(mean_volume[mask]))
    refined = mask & (mean_volume > floor)
    refined = np.stack([ndimage.binary_fill_holes(refined[..., z]) for z in range(refined.shape[2])], -1)
    labels, n = ndimage.label(refined)
    if n > 1:
        sizes = ndimage.sum_labels(refined, labels, index=np.arange(1, n + 1))
        refined = labels == (1 + int(np.argmax(sizes)))
    return refined


def brain_mask(series: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Brain mask of a 4D series (x, y, z, t) in its own grid (bool)."""
    mean_volume = np.median(series, axis=-1) if series.ndim == 4 else series
    return refine_mask(template_brain_mask(mean_volume, affine), mean_volume)
