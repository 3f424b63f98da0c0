"""The reference a subject's maps are scored and drawn against: one loader for the metrics
and the figures, so the montage shows what the metrics scored.

Config ``reference``: ``reference_dir`` (the participants row's folder of maps, resampled by
world coordinates onto the DSC grid, or registered onto it with
``reference_registration``), or a method's name (that method's maps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bolus import paths
from bolus.io.errors import SubjectError

#: share of the brain mask where the reference maps must be defined (after resampling into
#: the DSC grid); reference maps leave out CSF and vessels (≈ 10–20 % of the mask)
MIN_REFERENCE_COVERAGE = 0.25


def reference_files(reference_dir) -> dict[str, Path]:
    """``{map: path}`` of the reference maps present in ``reference_dir`` (``cbf.nii.gz``
    or ``.nii``, …): what a cohort's reference actually holds."""
    found = {}
    for name in paths.MAPS:
        for ext in (".nii.gz", ".nii"):
            path = Path(reference_dir) / f"{name}{ext}"
            if path.exists():
                found[name] = path
                break
    return found


def load_reference_maps(
    reference_dir, target_shape, target_affine, register_onto=None
) -> dict[str, np.ndarray]:
    """The reference maps present in ``reference_dir``, resampled into the subject's DSC grid
    by world coordinates (any grid or orientation of the same head); NaN outside the
    reference's field of view.

    ``register_onto`` (config ``reference_registration: true``): the subject's concentration
    series; when the reference grid differs from the DSC grid the maps are registered onto
    it instead (:func:`bolus.preprocess.coregister.register_reference_maps`)."""
    from bolus.io.nifti import load_volume, resample_to_grid

    files = reference_files(reference_dir)
    if register_onto is not None:
        registered = _registered(reference_dir, files, target_shape, target_affine, register_onto)
        if registered is not None:
            return registered
    found = {}
    for name, path in files.items():
        data, affine = load_volume(path)
        found[name] = resample_to_grid(
            data, affine, target_shape, target_affine, order=1, cval=np.nan
        )
    return found


def _registered(reference_dir, files, target_shape, target_affine, conc_path):
    """Reference maps registered onto the DSC grid, or None when their grid is that grid."""
    import nibabel as nib

    from bolus.io.nifti import load_volume
    from bolus.preprocess.coregister import register_reference_maps, relative_cbv

    guide = files.get("cbv") or files.get("cbf")
    if guide is None:
        return None
    image = nib.load(guide)
    if tuple(image.shape[:3]) == tuple(target_shape) and np.allclose(
        image.affine, target_affine, atol=1e-3
    ):
        return None
    conc, affine = load_volume(conc_path)
    return register_reference_maps(
        reference_dir, relative_cbv(conc), affine, work_dir=Path(conc_path).parent
    )


def subject_reference(
    subject: paths.SubjectPaths,
    brain: np.ndarray,
    affine,
    predictions: dict,
    *,
    reference: str,
    reference_dir=None,
    registration: bool = False,
    min_coverage: float | None = MIN_REFERENCE_COVERAGE,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(reference maps, brain where they are defined) for one subject.

    ``reference`` is config ``reference``; with a method's name its maps are taken out of
    ``predictions`` (``{method: {map: array}}``). Raises SubjectError when there is no
    reference, or (``min_coverage``) when it covers too little of the brain: another head,
    field of view or a wrong affine."""
    pid = subject.pid
    if reference == "reference_dir":
        if not reference_dir:
            raise SubjectError(pid, None, "config reference=reference_dir but no reference_dir")
        register_onto = subject.conc if registration else None
        maps = load_reference_maps(reference_dir, brain.shape, affine, register_onto)
        if not maps:
            raise SubjectError(pid, reference_dir, "no reference maps (cbf.nii.gz, …)")
    else:
        maps = predictions.pop(reference, {})
        if not maps:
            raise SubjectError(pid, None, f"config reference={reference} but it has no maps")
    # compare only where the reference is defined: reference maps leave out what is not
    # tissue (CSF, vessels) as NaN, and a lesion there would be an artefact of the comparison
    defined = np.logical_and.reduce([np.isfinite(r) for r in maps.values()])
    coverage = (brain & defined).sum() / max(int(brain.sum()), 1)
    if min_coverage is not None and coverage < min_coverage:
        raise SubjectError(
            pid,
            reference_dir or reference,
            f"the reference maps cover {100 * coverage:.0f} % of the brain mask in the DSC "
            f"grid (need {100 * min_coverage:.0f} %): another head, another field of "
            "view, or a wrong affine",
        )
    return maps, brain & defined


def method_maps(subject: paths.SubjectPaths, methods) -> dict[str, dict[str, np.ndarray]]:
    """Every map on disk of every method whose maps stage did not fail or skip this time
    (its verdict; maps an earlier run left are not scored), methods with no map left out."""
    import json

    from bolus.io.nifti import load_volume

    found = {}
    for method in methods:
        verdict = subject.verdict(paths.method_stage(method))
        if verdict.exists() and json.loads(verdict.read_text()).get("status") != "ok":
            continue
        maps = {
            name: load_volume(path)[0]
            for name, path in subject.maps(method).items()
            if path.exists()
        }
        if maps:
            found[method] = maps
    return found
