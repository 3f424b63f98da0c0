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

# SyN iterations per level (shrink 4, 2, 1): the finest level is skipped, a brain outline
# at DSC resolution needs only the coarse deformation.
SYN_ITERATIONS = (40, 20, 0)
SIGNAL_FLOOR = 0.25  # fraction of the median in-mask baseline signal below which a voxel is air


def _ants_from_nifti(data: np.ndarray, affine: np.ndarray):
    """An ANTs image with the NIfTI geometry (ANTs works in LPS; NIfTI in RAS)."""
    from bolus.preprocess.itk import load_ants

    ants = load_ants()

    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction_ras = affine[:3, :3] / zooms
    lps = np.diag([-1.0, -1.0, 1.0])
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=tuple(lps @ affine[:3, 3]),
        spacing=tuple(zooms),
        direction=lps @ direction_ras,
    )


def template_brain_mask(
    mean_volume: np.ndarray, affine: np.ndarray, *, nonlinear: bool = False, work_dir=None
) -> np.ndarray:
    """The MNI152 brain mask, registered (ANTs, mutual information: affine, then SyN with
    ``nonlinear``) onto ``mean_volume``'s grid. The template is brain only: give a
    skull-stripped volume. Transforms go to a private folder in ``work_dir`` (default: the
    system's temporary folder), removed at the end."""
    import tempfile

    from nilearn import datasets

    from bolus.preprocess.itk import load_ants

    ants = load_ants()

    template = datasets.load_mni152_template(resolution=2)
    template_mask = datasets.load_mni152_brain_mask(resolution=2)
    fixed = _ants_from_nifti(mean_volume, affine)
    moving = _ants_from_nifti(np.asanyarray(template.dataobj), template.affine)
    moving_mask = _ants_from_nifti(np.asanyarray(template_mask.dataobj), template_mask.affine)
    ants.config.set_ants_deterministic(True, 1)
    with tempfile.TemporaryDirectory(prefix="bolus-mask-", dir=work_dir) as tmp:
        options = {"type_of_transform": "Affine", "aff_metric": "mattes"}
        if nonlinear:  # affine then SyN, coarse levels only: the mask needs no fine detail
            options = {"type_of_transform": "SyN", "aff_metric": "mattes",
                       "syn_metric": "mattes", "reg_iterations": SYN_ITERATIONS}  # fmt: skip
        registration = ants.registration(
            fixed, moving, outprefix=str(Path(tmp) / "template_"), **options
        )
        warped = ants.apply_transforms(
            fixed, moving_mask, registration["fwdtransforms"], interpolator="linear"
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


def brain_mask(
    series: np.ndarray,
    affine: np.ndarray,
    *,
    mean_volume: np.ndarray | None = None,
    nonlinear: bool = True,
    work_dir=None,
) -> np.ndarray:
    """Brain mask of a 4D series (x, y, z, t) in its own grid (bool).

    ``mean_volume``: the image the template is registered to (default: the temporal median;
    the pipeline gives the mean pre-bolus volume). The data estimate skull-strips it; the
    MNI152 mask registered onto that stripped volume (affine, then SyN with ``nonlinear``)
    then bounds it (one voxel of tolerance), which removes what the image alone cannot tell
    from brain (eyes, neck, scalp touching the brain).
    """
    if mean_volume is None:
        mean_volume = np.median(series, axis=-1) if series.ndim == 4 else series
    estimate = data_brain_estimate(mean_volume)
    if not estimate.any():
        return estimate
    propagated = template_brain_mask(
        np.where(estimate, mean_volume, 0.0), affine, nonlinear=nonlinear, work_dir=work_dir
    )
    bounded = estimate & ndimage.binary_dilation(propagated, _in_plane(1))
    return refine_mask(bounded, mean_volume)


def user_brain_mask(path, shape, affine: np.ndarray, subject: str = "") -> np.ndarray:
    """A user-supplied mask (participants.tsv ``brain_mask``) on the series' grid: resampled
    by world coordinates (nearest neighbour), any non-zero voxel is brain."""
    from bolus.io.errors import SubjectError
    from bolus.io.nifti import load_volume, resample_to_grid

    try:
        data, mask_affine = load_volume(path)
    except (OSError, ValueError) as exc:
        raise SubjectError(subject, path, f"cannot read the brain mask: {exc}") from exc
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SubjectError(subject, path, f"brain mask is not 3D (shape {data.shape})")
    mask = resample_to_grid(data, mask_affine, tuple(shape), affine, order=0) > 0
    if not mask.any():
        raise SubjectError(subject, path, "brain mask is empty on the DSC grid (another head?)")
    return mask


def tissue_mask(
    brain: np.ndarray,
    cbv: np.ndarray | None = None,
    conc: np.ndarray | None = None,
    aif_curve: np.ndarray | None = None,
    *,
    cbv_factor: float = 3.0,
    arterial_r: float = 0.9,
    arterial_ttp_frames: int = 1,
    csf_fraction: float = 0.3,
) -> np.ndarray:
    """Brain tissue for metrics: the brain without CSF and large vessels (bool).

    - vessels: CBV above ``cbv_factor`` × the median brain CBV (a voxel of pure blood has a CBV
      tens of times tissue's), or an arterial-shaped curve: correlation with the AIF ≥
      ``arterial_r``, peaking within ``arterial_ttp_frames`` of it and at least as high as
      half its peak;
    - CSF: carries no tracer, so its first-pass area is below ``csf_fraction`` × the median
      brain area (computed from ``conc``) — or CBV below that fraction of the median.
    Arrays: ``brain`` and ``cbv`` spatial, ``conc`` (..., T), ``aif_curve`` (T,).
    """
    brain = np.asarray(brain).astype(bool)
    keep = brain.copy()
    if cbv is not None:
        cbv = np.nan_to_num(np.asarray(cbv, float), nan=0.0)
        median = float(np.median(cbv[brain])) if brain.any() else 0.0
        if median > 0:
            keep &= cbv <= cbv_factor * median
            keep &= cbv >= csf_fraction * median
    if conc is not None:
        flat = np.nan_to_num(np.asarray(conc, float)).reshape(-1, conc.shape[-1])
        inside = brain.reshape(-1)
        area = flat.sum(axis=1)
        median_area = float(np.median(area[inside])) if inside.any() else 0.0
        if median_area > 0 and cbv is None:
            keep &= (area >= csf_fraction * median_area).reshape(brain.shape)
        if aif_curve is not None:
            aif = np.asarray(aif_curve, float)
            centred = flat - flat.mean(axis=1, keepdims=True)
            reference = aif - aif.mean()
            norms = np.linalg.norm(centred, axis=1) * np.linalg.norm(reference)
            r = np.divide(centred @ reference, norms, out=np.zeros(len(flat)), where=norms > 0)
            near = np.abs(flat.argmax(axis=1) - int(aif.argmax())) <= arterial_ttp_frames
            high = flat.max(axis=1) >= 0.5 * aif.max()
            keep &= ~((r >= arterial_r) & near & high).reshape(brain.shape)
    return keep
