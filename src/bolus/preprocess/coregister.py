"""Coregistration onto the subject's DSC grid: the TOF-MRA, and reference maps on request.

TOF-MRA (for the TOF → perfusion model, Kossen et al.)
    :func:`convert_tof` brings the subject's TOF into the layout: the TOF series of
    ``tof_dicom_dir`` converted by dcm2niix (the single-frame series with the most slices,
    sidecar de-identified exactly like the DSC's), or the NIfTI of ``tof_nifti``.
    :func:`coregister_tof` registers it **rigidly** (ANTs, Mattes mutual information: TOF and
    the T2*-weighted EPI have different contrasts) to the subject's **mean pre-bolus DSC
    image** (:func:`bolus.preprocess.motion.pre_bolus_reference` of the motion-corrected
    series) and resamples it onto the DSC grid (linear). The TOF is a separate acquisition:
    its own, finer grid and field of view, and the head may have moved between the series.
    Registration starts from the scanner coordinates (identity: both series share the
    scanner's frame) with a 3-level pyramid.

Reference maps (``reference_dir``)
    By default they are resampled by world coordinates (:func:`bolus.stages.load_reference_maps`:
    vendor maps of the same session share the scanner's frame). With the config key
    ``reference_registration: true`` they are registered instead (:func:`register_reference_maps`):
    the reference CBV map (else CBF) rigidly onto the subject's relative CBV, the area under
    its ΔR2* (or HU) curves — the same contrast on both sides — then every map is carried
    by that transform (linear interpolation).

ANTs writes its transforms to the system's temporary folder unless told otherwise: here they
go to a private folder inside ``work_dir`` (the job's output folder) that is removed
afterwards, as in :mod:`bolus.preprocess.motion`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from bolus.io.errors import SubjectError

log = logging.getLogger(__name__)

RANDOM_SEED = 1  # ANTs samples the metric randomly: a fixed seed makes reruns identical
METRIC_SAMPLES = 20000
LPS = np.diag([-1.0, -1.0, 1.0])


def _ants_image(data: np.ndarray, affine: np.ndarray):
    """An ANTs image with the NIfTI geometry (ANTs works in LPS; NIfTI in RAS)."""
    from bolus.preprocess.mask import _ants_from_nifti

    return _ants_from_nifti(np.asarray(data, np.float32), affine)


def _transform_matrix_ras(transform_file: str) -> np.ndarray:
    """4×4 world (RAS mm) matrix of an ANTs rigid/affine .mat: fixed point → moving point."""
    from bolus.preprocess.itk import load_ants

    ants = load_ants()

    tx = ants.read_transform(transform_file)
    params = np.asarray(tx.parameters, float)
    centre = np.asarray(tx.fixed_parameters, float)[:3]
    a = params[:9].reshape(3, 3)
    t = params[9:12]
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = t + centre - a @ centre
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def register_rigid(
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    *,
    work_dir=None,
    extra_moving: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Rigid registration (ANTs, Mattes MI, from the scanner coordinates) of ``moving`` onto
    ``fixed``; returns (moving resampled on the fixed grid, the 4×4 RAS transform fixed
    point → moving point, ``extra_moving`` volumes (same grid as ``moving``) carried by the
    same transform). Transforms live in a private folder in ``work_dir``, removed at the end.
    """
    from bolus.preprocess.itk import load_ants
    from bolus.preprocess.motion import registration_schedule

    ants = load_ants()

    fixed_img = _ants_image(fixed, fixed_affine)
    moving_img = _ants_image(moving, moving_affine)
    schedule = registration_schedule(fixed.shape)
    schedule["aff_random_sampling_rate"] = float(
        np.clip(METRIC_SAMPLES / max(int(np.prod(fixed.shape)), 1), 0.05, 1.0)
    )
    ants.config.set_ants_deterministic(True, RANDOM_SEED)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bolus-coreg-", dir=work_dir) as tmp:
        registration = ants.registration(
            fixed_img,
            moving_img,
            type_of_transform="Rigid",
            aff_metric="mattes",
            initial_transform="Identity",
            outprefix=str(Path(tmp) / "coreg_"),
            **schedule,
        )
        try:
            forward = registration["fwdtransforms"]
            warped = ants.apply_transforms(fixed_img, moving_img, forward, interpolator="linear")
            carried = {
                name: ants.apply_transforms(
                    fixed_img, _ants_image(v, moving_affine), forward, interpolator="linear"
                ).numpy()
                for name, v in (extra_moving or {}).items()
            }
            matrix = _transform_matrix_ras(forward[0])
        finally:
            for path in set(registration["fwdtransforms"]) | set(registration["invtransforms"]):
                Path(path).unlink(missing_ok=True)
    return warped.numpy().astype(np.float32), matrix, carried


def displacement_mm(transform: np.ndarray, truth: np.ndarray, points: np.ndarray) -> np.ndarray:
    """|transform(p) − truth(p)| (mm) at world points (n, 3): how far apart two rigid
    transforms put each point."""
    p = np.c_[points, np.ones(len(points))]
    return np.linalg.norm((p @ transform.T - p @ truth.T)[:, :3], axis=1)


# ----------------------------------------------------------------------------- TOF
def _select_tof_series(series, subject: str, folder):
    """The TOF series of a folder: the single-frame series with the most slices."""
    candidates = [s for s in series if s.n_timepoints == 1 and s.n_slices > 1]
    if not candidates:
        found = "; ".join(s.summary() for s in series) or "no DICOM series"
        raise SubjectError(subject, folder, f"no 3D (single-frame) TOF series found ({found})")
    chosen = max(candidates, key=lambda s: (s.n_slices, s.n_files))
    log.info("%s: TOF series %s", subject, chosen.summary())
    return chosen


def convert_tof(row: dict, out_nifti, out_json, subject: str) -> Path:
    """The subject's TOF-MRA into the layout (``sub-XX_tof.nii.gz`` + de-identified JSON):
    from ``tof_dicom_dir`` (dcm2niix) when given, else from ``tof_nifti``."""
    import nibabel as nib

    from bolus.io import atomic
    from bolus.io.dicom import (
        _run_dcm2niix,
        assert_no_identifiers,
        deidentified_sidecar,
        discover_series,
        identifying_values,
    )

    folder, nifti = row.get("tof_dicom_dir"), row.get("tof_nifti")
    if folder:
        folder = Path(folder)
        if not folder.is_dir():
            raise SubjectError(subject, folder, "tof_dicom_dir is not a folder")
        info = _select_tof_series(discover_series(folder, subject), subject, folder)
        identifiers = identifying_values(info.files)
        with tempfile.TemporaryDirectory(prefix="bolus-dcm2niix-") as tmp:
            staged, converted = Path(tmp) / "in", Path(tmp) / "out"
            staged.mkdir()
            converted.mkdir()
            for i, path in enumerate(info.files):  # only this series' files; inputs untouched
                os.symlink(path.resolve(), staged / f"{i:06d}.dcm")
            images = _run_dcm2niix(staged, converted, [], subject, folder)
            if len(images) != 1:
                raise SubjectError(
                    subject, folder, f"dcm2niix wrote {len(images)} images from the TOF series"
                )
            image = nib.load(images[0])
            image = nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header)
            sidecar_path = images[0].with_name(images[0].name.split(".nii")[0] + ".json")
            sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
        clean = deidentified_sidecar(sidecar)
        clean["SourceSeriesDescription"] = info.description
        text = json.dumps(clean, indent=2)
        assert_no_identifiers(text, identifiers, subject, "TOF sidecar JSON")
        header_text = bytes(image.header["descrip"]).decode(errors="ignore")
        header_text += bytes(image.header["db_name"]).decode(errors="ignore")
        assert_no_identifiers(header_text, identifiers, subject, "TOF NIfTI header")
        source = folder
    elif nifti:
        source = Path(nifti)
        if not source.exists():
            raise SubjectError(subject, source, "tof_nifti does not exist")
        try:
            loaded = nib.load(source)
            image = nib.Nifti1Image(np.asanyarray(loaded.dataobj), loaded.affine, loaded.header)
        except (ValueError, OSError, nib.filebasedimages.ImageFileError) as exc:
            raise SubjectError(subject, source, f"cannot read: {exc}") from exc
        text = json.dumps({"SourceFile": "tof_nifti"}, indent=2)
    else:
        raise SubjectError(
            subject,
            None,
            "no TOF-MRA (participants.tsv tof_dicom_dir or tof_nifti): pix2pix needs it",
        )
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        image = image.slicer[..., 0]
    if len(image.shape) != 3 or min(image.shape) < 2:
        raise SubjectError(subject, source, f"the TOF is not a 3D volume (shape {shape})")
    atomic.save_image(image, Path(out_nifti))
    atomic.write_text(Path(out_json), text + "\n")
    return Path(out_nifti)


def dsc_reference_image(mc_dsc) -> tuple[np.ndarray, np.ndarray]:
    """(mean pre-bolus image, affine) of a motion-corrected DSC series (NIfTI)."""
    from bolus.io.nifti import load_volume
    from bolus.preprocess.motion import pre_bolus_reference

    series, affine = load_volume(mc_dsc)
    reference, _ = pre_bolus_reference(series)
    return reference, affine


def coregister_tof(tof_nifti, mc_dsc, out_nifti, *, subject: str = "", work_dir=None) -> dict:
    """Register the TOF onto the DSC mean pre-bolus image and write it on the DSC grid
    (``sub-XX_desc-coreg_tof.nii.gz``, the DSC affine). Returns the TOF→DSC transform
    (``transform_ras``: DSC-grid world point → TOF world point) and the TOF voxel size."""
    from bolus.io.nifti import load_volume, save_like, voxel_size_mm

    tof, tof_affine = load_volume(tof_nifti)
    fixed, affine = dsc_reference_image(mc_dsc)
    if not np.isfinite(tof).all() or float(np.std(tof)) == 0.0:
        raise SubjectError(subject, tof_nifti, "the TOF image is empty or not finite")
    work_dir = Path(out_nifti).parent if work_dir is None else work_dir
    warped, matrix, _ = register_rigid(tof, tof_affine, fixed, affine, work_dir=work_dir)
    save_like(np.clip(warped, 0, None), affine, out_nifti)
    moved = displacement_mm(matrix, np.eye(4), np.array([[0.0, 0.0, 0.0]]))[0]
    log.info(
        "%s: TOF (%s mm voxels) registered to the DSC grid; head at the origin moved %.1f mm",
        subject,
        "×".join(f"{v:.2f}" for v in voxel_size_mm(tof_affine)),
        moved,
    )
    return {"transform_ras": matrix.tolist(), "tof_voxel_mm": list(voxel_size_mm(tof_affine))}


def tof_stage(row, mc_dsc, tof_nifti, tof_json, coreg_nifti, subject: str) -> dict:
    """Per-subject TOF stage of the workflow: convert, then coregister onto the DSC grid."""
    convert_tof(row, tof_nifti, tof_json, subject)
    result = coregister_tof(tof_nifti, mc_dsc, coreg_nifti, subject=subject)
    matrix = np.asarray(result["transform_ras"])
    angle = np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1) / 2, -1.0, 1.0)))
    print(
        f"{subject}: TOF ({' x '.join(f'{v:.2f}' for v in result['tof_voxel_mm'])} mm) registered "
        f"onto the DSC grid: rotation {angle:.2f} deg, translation "
        f"{np.array2string(matrix[:3, 3], precision=2)} mm; wrote {coreg_nifti}"
    )
    return result


# ----------------------------------------------------------------------------- reference maps
def relative_cbv(conc: np.ndarray) -> np.ndarray:
    """The area under every voxel's concentration curve (a relative CBV), (X, Y, Z)."""
    return np.clip(np.nan_to_num(np.asarray(conc, np.float32)), 0, None).sum(axis=-1)


def _clip_bright(volume: np.ndarray, percentile: float = 98.0) -> np.ndarray:
    """``volume`` clipped at the ``percentile`` of its positive voxels: large arteries and
    veins (curve areas ten times tissue's) would squeeze the tissue into a few histogram bins
    of the mutual information."""
    volume = np.clip(np.nan_to_num(np.asarray(volume, np.float32)), 0, None)
    positive = volume[volume > 0]
    return np.minimum(volume, np.percentile(positive, percentile)) if positive.size else volume


def register_reference_maps(
    reference_dir,
    fixed_rcbv: np.ndarray,
    fixed_affine: np.ndarray,
    *,
    work_dir=None,
    return_transform: bool = False,
):
    """The reference maps of ``reference_dir`` registered (rigid, Mattes MI) onto the DSC grid:
    the reference CBV (else CBF) is registered to ``fixed_rcbv`` (:func:`relative_cbv` of the
    subject's concentration series) and every map follows; NaN outside the reference's
    field of view. ``return_transform``: also the 4×4 RAS transform (DSC world point →
    reference world point)."""
    from bolus import paths
    from bolus.io.nifti import load_volume

    found = {}
    for name in paths.MAPS:
        for ext in (".nii.gz", ".nii"):
            path = Path(reference_dir) / f"{name}{ext}"
            if path.exists():
                found[name] = load_volume(path)
                break
    guide = next((n for n in ("cbv", "cbf") if n in found), None)
    if guide is None:
        return ({}, np.eye(4)) if return_transform else {}
    data, affine = found[guide]
    others = {}
    for name, (volume, a) in found.items():
        if volume.shape != data.shape or not np.allclose(a, affine, atol=1e-3):
            raise SubjectError("", Path(reference_dir) / name, "reference maps differ in grid")
        others[name] = np.nan_to_num(volume)
    fov = {"__fov": np.ones(data.shape, np.float32)}
    _, matrix, carried = register_rigid(
        _clip_bright(data), affine, _clip_bright(fixed_rcbv), fixed_affine, work_dir=work_dir,
        extra_moving={**others, **fov},
    )  # fmt: skip
    inside = carried.pop("__fov") > 0.99
    maps = {name: np.where(inside, v, np.nan).astype(np.float32) for name, v in carried.items()}
    return (maps, matrix) if return_transform else maps
