"""The file layer: one function per workflow stage, from input paths to output paths.

Each reads its inputs, calls the array-level science in ``bolus.io``, ``bolus.preprocess``,
``bolus.perfusion`` and ``bolus.evaluate``, and writes its outputs. The Snakemake scripts
and the ``bolus`` command are thin calls of these; tests call them directly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bolus import paths
from bolus.config import PerfusionConstants, with_defaults
from bolus.io import atomic
from bolus.io.errors import SubjectError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- inspect
def inspect_subject(row: dict, out_json: str | Path, series_rule: str = "most_timepoints") -> dict:
    """Check that a subject's input can be converted; never raises for bad input.

    Writes ``{"participant_id", "status": "ok"|"failed", "reason", "series"}``: the workflow
    goes on with the subjects whose status is ok and reports the others in qc.tsv.
    """
    from bolus.io.checks import check_dicom_series
    from bolus.io.dicom import discover_series, select_series

    pid = row["participant_id"]
    record = {"participant_id": pid, "stage": "inspect", "status": "ok", "reason": "", "series": ""}
    try:
        if row.get("dicom_dir"):
            found = discover_series(row["dicom_dir"], pid)
            chosen = select_series(found, series_rule, pid, row["dicom_dir"])
            record["series"] = chosen.summary()
            check_dicom_series(chosen, pid, row["dicom_dir"])
        else:
            source = Path(row["dsc_nifti"])
            if not source.exists():
                raise SubjectError(pid, source, "DSC NIfTI does not exist")
            record["series"] = source.name
    except SubjectError as exc:
        record.update(status="failed", reason=str(exc))
    atomic.write_json(out_json, record)
    return record


def read_inspection(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------- convert
def convert_subject(
    row: dict, out_nifti, out_json, series_rule: str = "most_timepoints", modality=None
) -> dict:
    """DICOM folder (dcm2niix) or user NIfTI → ``sub-<label>_dsc.nii.gz`` + JSON sidecar,
    then checked to be quantifiable (:func:`bolus.perfusion.checks.check_signal`)."""
    import tempfile

    from bolus.io.atomic import install
    from bolus.io.dicom import convert_dicom_series, import_nifti_series
    from bolus.io.nifti import load_volume
    from bolus.perfusion.checks import check_signal

    pid = row["participant_id"]
    modality = modality or with_defaults({})["modality"]
    out_nifti, out_json = Path(out_nifti), Path(out_json)
    out_nifti.parent.mkdir(parents=True, exist_ok=True)
    # converted into a private folder; the outputs appear only once the series is accepted
    with tempfile.TemporaryDirectory(prefix=".bolus-convert-", dir=out_nifti.parent) as tmp:
        staged_nifti, staged_json = Path(tmp) / out_nifti.name, Path(tmp) / out_json.name
        if row.get("dicom_dir"):
            source = row["dicom_dir"]
            sidecar = convert_dicom_series(
                source, staged_nifti, staged_json, subject=pid, series_rule=series_rule,
                modality=modality,
            )  # fmt: skip
        else:
            source = row["dsc_nifti"]
            sidecar = import_nifti_series(
                source, staged_nifti, staged_json, subject=pid, modality=modality
            )
        check_signal(load_volume(staged_nifti)[0], sidecar["VolumeTiming"], pid, source, modality)
        install({staged_json: out_json, staged_nifti: out_nifti})
    return sidecar


# ----------------------------------------------------------------------------- preprocess
def preprocess_subject(
    dsc,
    out_mc,
    out_motion_tsv,
    out_mask,
    *,
    motion: bool = True,
    transform: str = "Rigid",
    fd_threshold_mm: float | None = None,
    workers: int = 1,
    user_mask=None,
) -> None:
    """Motion correction (ANTs rigid to the mean pre-bolus volume) then brain mask (template
    propagation + refinement, or ``user_mask`` resampled onto the series' grid).

    ANTs' temporary transforms live in a private folder beside the outputs, removed at the end.
    ``motion.tsv`` flags volumes with FD above ``fd_threshold_mm`` (config
    ``motion.fd_threshold_mm``; None: the schema's default).
    """
    import tempfile

    from bolus.config import schema_defaults
    from bolus.io.nifti import load_volume, save_like, voxel_size_mm
    from bolus.preprocess.mask import brain_mask, user_brain_mask
    from bolus.preprocess.motion import MOTION_COLUMNS, motion_correct, pre_bolus_reference

    if fd_threshold_mm is None:
        fd_threshold_mm = float(schema_defaults()["motion"]["fd_threshold_mm"])
    series, affine = load_volume(dsc)
    Path(out_mc).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bolus-preprocess-", dir=Path(out_mc).parent) as tmp:
        if motion:
            corrected, table = motion_correct(
                series,
                voxel_size_mm(affine),
                transform=transform,
                workers=workers,
                work_dir=tmp,
                fd_threshold_mm=fd_threshold_mm,
            )
        else:
            corrected = series.astype(np.float32)
            table = pd.DataFrame(0.0, index=range(series.shape[-1]), columns=list(MOTION_COLUMNS))
            table.insert(0, "volume", np.arange(series.shape[-1]))
            table["framewise_displacement_mm"] = 0.0
            table["fd_above_threshold"] = 0
        header = nib.load(str(dsc)).header  # keeps the repetition time and units of the series
        save_like(corrected, affine, out_mc, header=header)
        atomic.write_table(out_motion_tsv, table, float_format="%.6g")
        if user_mask:
            mask = user_brain_mask(user_mask, corrected.shape[:3], affine)
        else:
            reference, _ = pre_bolus_reference(corrected)
            mask = brain_mask(corrected, affine, mean_volume=reference, work_dir=tmp)
    save_like(mask.astype(np.uint8), affine, out_mask, dtype=np.uint8)


# ----------------------------------------------------------------------------- perfusion
def read_sidecar_timing(dsc_json) -> tuple[np.ndarray, float | None]:
    """(volume onset times in s, echo time in s) from the converted series' sidecar; the
    echo time is None when the sidecar has none (CT perfusion)."""
    sidecar = json.loads(Path(dsc_json).read_text())
    times = np.asarray(sidecar["VolumeTiming"], dtype=float)
    te = sidecar.get("EchoTime")
    return times, None if te is None else float(te)


def write_aif_table(path, times_s: np.ndarray, curve: np.ndarray, vof=None) -> None:
    """AIF.tsv: header, columns ``time`` (s) and ``concentration`` (ΔR2* 1/s or HU), and
    ``vof`` (the venous output function, same units) when one was found."""
    table = pd.DataFrame(
        {"time": np.asarray(times_s, float), "concentration": np.asarray(curve, float)}
    )
    if vof is not None:
        table["vof"] = np.asarray(vof, float)
    atomic.write_table(path, table, float_format="%.8g")


def read_aif_table(path) -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(path, sep="\t")
    missing = {"time", "concentration"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: AIF table lacks column(s) {', '.join(sorted(missing))}")
    return table["time"].to_numpy(float), table["concentration"].to_numpy(float)


def write_maps(maps: dict, affine, prefix, method: str) -> list[Path]:
    from bolus.io.nifti import save_like

    written = []
    for name in paths.MAPS:
        out = paths.map_prefix(prefix, method, name)
        save_like(np.asarray(maps[name], dtype=np.float32), affine, out)
        written.append(out)
    return written


def compute_maps(conc, times_s, aif_curve, methods, mask, config) -> dict[str, dict]:
    """Every configured SVD method's maps for one subject: {method: {map: array}}."""
    from bolus.perfusion.maps import perfusion_maps

    config = with_defaults(config)
    svd = config["svd"]
    constants = PerfusionConstants.from_config(config)
    thresholds = {
        "ssvd": {"threshold": svd["ssvd_threshold"]},
        "csvd": {"threshold": svd["csvd_threshold"]},
        "osvd": {"oscillation_index": svd["osvd_oscillation_index"]},
    }
    return {
        method: perfusion_maps(
            conc, times_s, aif_curve, method, mask=mask, constants=constants, **thresholds[method]
        )
        for method in methods
    }


def _subject_of(path) -> str:
    """``sub-XX`` from a BIDS file name (for messages)."""
    return Path(path).name.split("_")[0]


def perfusion_subject(
    mc_dsc,
    dsc_json,
    mask_path,
    out_conc,
    out_aif_tsv,
    out_aif_mask,
    map_prefix,
    config=None,
    *,
    out_tissue_mask=None,
    user_aif_mask=None,
    out_leakage_k2=None,
) -> None:
    """Signal → concentration → AIF (automatic, or the mean curve of ``user_aif_mask``) →
    SVD maps for every configured method; ``out_tissue_mask``: the brain without CSF and
    large vessels (:func:`bolus.preprocess.mask.tissue_mask`, from the first method's CBV).
    With config ``concentration.leakage_correction`` the brain curves are leakage-corrected
    (:func:`bolus.perfusion.leakage.boxerman_weisskoff`) after the AIF is chosen, the saved
    concentration and the maps use the corrected curves, and the K2 map (1/s) goes to
    ``out_leakage_k2``."""
    from bolus.io.nifti import load_volume, save_like
    from bolus.perfusion.aif import select_aif
    from bolus.perfusion.concentration import concentration_from_signal, ct_concentration

    config = with_defaults(config)
    series, affine = load_volume(mc_dsc)
    mask = load_volume(mask_path)[0] > 0
    times, te_s = read_sidecar_timing(dsc_json)
    if config["modality"] == "ctp":
        conc = ct_concentration(series, times)
    else:
        conc, _ = concentration_from_signal(series, te_s, times, mask=mask)
    try:
        if user_aif_mask:
            from bolus.perfusion.aif import aif_from_mask
            from bolus.preprocess.mask import user_brain_mask

            voxels = user_brain_mask(user_aif_mask, mask.shape, affine)
            aif = aif_from_mask(conc, times, voxels)
        else:
            aif = select_aif(
                conc,
                times,
                mask,
                n_voxels=config["aif"]["n_voxels"],
                method=config["aif"]["method"],
                vof_scaling=config["aif"]["vof_scaling"],
            )
    except ValueError as exc:  # empty mask, no curve with a bolus: the data, not the code
        raise SubjectError(
            _subject_of(mc_dsc), mc_dsc, f"no arterial input function: {exc}"
        ) from exc
    if aif.vof_scale != 1.0:
        log.warning(
            "%s: AIF scaled ×%.2f to the venous output function's area (aif.vof_scaling=%s): "
            "the arterial voxels are partial-volumed",
            _subject_of(mc_dsc), aif.vof_scale, config["aif"]["vof_scaling"],
        )  # fmt: skip
    if config["concentration"]["leakage_correction"]:
        from bolus.perfusion.leakage import boxerman_weisskoff

        try:
            leakage = boxerman_weisskoff(conc, times, mask)
        except ValueError as exc:
            raise SubjectError(
                _subject_of(mc_dsc), mc_dsc, f"leakage correction impossible: {exc}"
            ) from exc
        conc = leakage.corrected
        if out_leakage_k2:
            save_like(leakage.k2, affine, out_leakage_k2)
    save_like(conc.astype(np.float32), affine, out_conc, header=nib.load(str(mc_dsc)).header)
    write_aif_table(out_aif_tsv, aif.times_s, aif.curve, vof=aif.vof_curve)
    save_like(aif.voxel_mask.astype(np.uint8), affine, out_aif_mask, dtype=np.uint8)
    all_maps = compute_maps(conc, times, aif.curve, config["svd"]["methods"], mask, config)
    for method, maps in all_maps.items():
        write_maps(maps, affine, map_prefix, method)
    if out_tissue_mask:
        from bolus.preprocess.mask import tissue_mask

        first = all_maps[config["svd"]["methods"][0]]
        tissue = tissue_mask(mask, cbv=first["cbv"], conc=conc, aif_curve=aif.curve)
        save_like(tissue.astype(np.uint8), affine, out_tissue_mask, dtype=np.uint8)


def maps_from_files(conc_path, aif_tsv, out_prefix, method: str, mask_path=None, config=None):
    """``bolus maps``: one method's maps from a concentration series and an AIF table."""
    from bolus.io.nifti import load_volume

    conc, affine = load_volume(conc_path)
    times, curve = read_aif_table(aif_tsv)
    if conc.ndim != 4 or conc.shape[-1] != times.size:
        raise ValueError(
            f"{conc_path}: {conc.shape[-1] if conc.ndim == 4 else 'no'} time points, "
            f"but {aif_tsv} has {times.size}"
        )
    mask = load_volume(mask_path)[0] > 0 if mask_path else None
    maps = compute_maps(conc, times, curve, [method], mask, config)[method]
    return write_maps(maps, affine, out_prefix, method)


# ----------------------------------------------------------------------------- metrics
#: share of the brain mask where the reference maps must be defined (after resampling into
#: the DSC grid); reference maps leave out CSF and vessels (≈ 10–20 % of the mask)
MIN_REFERENCE_COVERAGE = 0.25


def load_reference_maps(
    reference_dir, target_shape, target_affine, register_onto=None
) -> dict[str, np.ndarray]:
    """The reference maps present in ``reference_dir`` (``cbf.nii.gz`` …), resampled into
    the subject's DSC grid by world coordinates (any grid or orientation of the same head).

    ``register_onto`` (config ``reference_registration: true``): the subject's concentration
    series; when the reference grid differs from the DSC grid the maps are registered onto
    it instead (:func:`bolus.preprocess.coregister.register_reference_maps`)."""
    from bolus.io.nifti import load_volume, resample_to_grid

    if register_onto is not None:
        registered = _registered_reference_maps(
            reference_dir, target_shape, target_affine, register_onto
        )
        if registered is not None:
            return registered

    found = {}
    for name in paths.MAPS:
        candidates = [Path(reference_dir) / f"{name}{ext}" for ext in (".nii.gz", ".nii")]
        path = next((p for p in candidates if p.exists()), None)
        if path is not None:
            data, affine = load_volume(path)
            # outside the reference's field of view the reference is undefined, not 0
            found[name] = resample_to_grid(
                data, affine, target_shape, target_affine, order=1, cval=np.nan
            )
    return found


def _registered_reference_maps(reference_dir, target_shape, target_affine, conc_path):
    """Reference maps registered onto the DSC grid, or None when their grid is that grid."""
    from bolus.io.nifti import load_volume
    from bolus.preprocess.coregister import register_reference_maps, relative_cbv

    guide = next(
        (p for n in ("cbv", "cbf") for e in (".nii.gz", ".nii")
         if (p := Path(reference_dir) / f"{n}{e}").exists()),
        None,
    )  # fmt: skip
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


def subject_metrics_table(
    participant_id: str,
    map_prefix,
    methods,
    mask_path,
    out_tsv,
    *,
    reference_dir=None,
    lesion_mask=None,
    tissue_labels=None,
    config=None,
) -> pd.DataFrame:
    """Every method's maps against the reference → long table (participant_id, method,
    map, region, metric, value). Regions: ``bolus.evaluate.regions`` (grey and white matter
    from ``tissue_labels`` or the reference_dir's ``labels.nii.gz`` when there is one)."""
    from bolus.evaluate.aggregate import subject_metrics, write_tsv
    from bolus.evaluate.regions import load_tissue_masks
    from bolus.io.nifti import load_volume, resample_to_grid, voxel_size_mm

    config = with_defaults(config)
    mask, affine = load_volume(mask_path)
    mask = mask > 0
    reference_name = config["reference"]
    predictions = {
        method: {
            name: load_volume(path)[0]
            for name in paths.MAPS
            if (path := paths.map_prefix(map_prefix, method, name)).exists()
        }
        for method in methods
    }
    if reference_name == "reference_dir":
        if not reference_dir:
            raise SubjectError(
                participant_id, None, "config reference=reference_dir but no reference_dir"
            )
        register_onto = None
        if config.get("reference_registration"):
            register_onto = paths.SubjectPaths(Path(map_prefix).parents[2], participant_id).conc
        reference = load_reference_maps(reference_dir, mask.shape, affine, register_onto)
        if not reference:
            raise SubjectError(participant_id, reference_dir, "no reference maps (cbf.nii.gz, …)")
    else:
        reference = predictions.pop(reference_name)
    # Compare only where the reference is defined: reference maps leave out what is not
    # tissue (CSF, vessels) as NaN, and a lesion there would be an artefact of the comparison.
    defined = np.logical_and.reduce([np.isfinite(r) for r in reference.values()])
    coverage = (mask & defined).sum() / max(int(mask.sum()), 1)
    if coverage < MIN_REFERENCE_COVERAGE:
        raise SubjectError(
            participant_id,
            reference_dir or reference_name,
            f"the reference maps cover {100 * coverage:.0f} % of the brain mask in the DSC "
            f"grid (need {100 * MIN_REFERENCE_COVERAGE:.0f} %): another head, another field of "
            "view, or a wrong affine",
        )
    mask = mask & defined
    lesion = None
    if lesion_mask:
        data, lesion_affine = load_volume(lesion_mask)
        lesion = resample_to_grid(data, lesion_affine, mask.shape, affine, order=0) > 0
    tissue = load_tissue_masks(participant_id, mask.shape, affine, reference_dir, tissue_labels)
    table = subject_metrics(
        participant_id,
        predictions,
        reference,
        mask,
        tuple(voxel_size_mm(affine)),
        config["lesion"]["tmax_threshold_s"],
        lesion_mask=lesion,
        tissue=tissue,
    )
    write_tsv(table, out_tsv)
    return table


# ----------------------------------------------------------------------------- study
def study_outputs(participants_tsv, subjects, output_dir, seed: int = 0, config=None) -> Path:
    """qc.tsv, and subjects.tsv, study.tsv, paired.tsv, study.md and excluded.tsv over the
    subjects that completed every stage (strata, baseline and, with learned models, the
    subjects scored from config ``study``); the others are listed, with their reason, as
    exclusions."""
    from bolus.evaluate.aggregate import available_strata, write_study_tables
    from bolus.participants import read_participants
    from bolus.qc import completed, exclusions, qc_table

    participants = read_participants(participants_tsv, seed=seed)
    qc = qc_table(output_dir, subjects)
    atomic.write_table(paths.qc_table(output_dir), qc)
    excluded = exclusions(qc)
    atomic.write_table(paths.excluded_table(output_dir), excluded)
    done = completed(qc)
    config = with_defaults(config)
    study = config["study"]
    participants = participants.reset_index(drop=True)
    write_study_tables(
        [paths.SubjectPaths(output_dir, pid).metrics_tsv for pid in done],
        output_dir,
        participants=participants,
        strata=available_strata(participants, study["strata"]),
        baseline=study["baseline"],
        excluded=excluded,
        models=config["models"],
        scope=study["subjects"],
    )
    return paths.study_table(output_dir)
