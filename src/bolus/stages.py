"""The file layer: one function per per-subject workflow stage.

Each takes the subject's :class:`bolus.paths.SubjectPaths` (every file it reads and writes)
and the config sections it reads (filled by :func:`bolus.config.section` when partial), calls
the array-level science in ``bolus.io``, ``bolus.preprocess``, ``bolus.perfusion`` and
``bolus.evaluate``, and writes its outputs. The Snakemake scripts and the ``bolus`` command
are thin calls of these; tests call them directly. Imports are made inside each stage, so a
job pays only for what its stage uses.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bolus import paths
from bolus.config import PerfusionConstants, section
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
    modality = section("modality", modality)
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
    subject: paths.SubjectPaths,
    motion: dict | None = None,
    *,
    workers: int = 1,
    user_mask=None,
) -> None:
    """Motion correction (ANTs rigid to the mean pre-bolus volume) then brain mask (template
    propagation + refinement, or ``user_mask`` resampled onto the series' grid).

    ``motion``: the config's ``motion`` section (``enabled``, ``transform``,
    ``fd_threshold_mm``: volumes whose framewise displacement exceeds it are flagged in
    ``motion.tsv``). ANTs' temporary transforms live in a private folder beside the outputs,
    removed at the end.
    """
    import tempfile

    import nibabel as nib
    import numpy as np

    from bolus.io.nifti import load_volume, save_like, voxel_size_mm
    from bolus.preprocess.mask import brain_mask, user_brain_mask
    from bolus.preprocess.motion import motion_correct, pre_bolus_reference, still_head_table

    motion = section("motion", motion)
    series, affine = load_volume(subject.dsc)
    subject.mc_dsc.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bolus-preprocess-", dir=subject.mc_dsc.parent) as tmp:
        if motion["enabled"]:
            corrected, table = motion_correct(
                series,
                voxel_size_mm(affine),
                transform=motion["transform"],
                workers=workers,
                work_dir=tmp,
                fd_threshold_mm=float(motion["fd_threshold_mm"]),
            )
        else:
            corrected, table = series.astype(np.float32), still_head_table(series.shape[-1])
        header = nib.load(str(subject.dsc)).header  # the repetition time and units
        save_like(corrected, affine, subject.mc_dsc, header=header)
        atomic.write_table(subject.motion_tsv, table, float_format="%.6g")
        if user_mask:
            mask = user_brain_mask(user_mask, corrected.shape[:3], affine)
        else:
            reference, _ = pre_bolus_reference(corrected)
            mask = brain_mask(corrected, affine, mean_volume=reference, work_dir=tmp)
    save_like(mask.astype(np.uint8), affine, subject.brain_mask, dtype=np.uint8)


# ----------------------------------------------------------------------------- perfusion
def perfusion_subject(
    subject: paths.SubjectPaths,
    *,
    modality: str | None = None,
    aif: dict | None = None,
    concentration: dict | None = None,
    user_aif_mask=None,
) -> None:
    """Signal → concentration → AIF (automatic, or the mean curve of ``user_aif_mask``), and
    the tissue mask (the brain without CSF and large vessels,
    :func:`bolus.preprocess.mask.tissue_mask`, from the area-ratio CBV that every SVD method
    shares). The maps of each method are :func:`svd_maps_subject`'s.

    Config sections: ``modality``, ``aif`` and ``concentration``. With
    ``concentration.leakage_correction`` the brain curves are leakage-corrected
    (:func:`bolus.perfusion.leakage.boxerman_weisskoff`) after the AIF is chosen, the saved
    concentration uses the corrected curves, and the K2 map (1/s) is written."""
    import nibabel as nib
    import numpy as np

    from bolus.io.nifti import load_volume, save_like
    from bolus.io.tables import read_sidecar_timing, write_aif_table
    from bolus.perfusion.aif import select_aif
    from bolus.perfusion.concentration import concentration_from_signal, ct_concentration
    from bolus.perfusion.maps import trapezoid_area
    from bolus.preprocess.mask import tissue_mask

    modality = section("modality", modality)
    aif_options = section("aif", aif)
    leakage_correction = section("concentration", concentration)["leakage_correction"]
    pid = subject.pid
    series, affine = load_volume(subject.mc_dsc)
    mask = load_volume(subject.brain_mask)[0] > 0
    times, te_s = read_sidecar_timing(subject.dsc_json)
    if modality == "ctp":
        conc = ct_concentration(series, times)
    else:
        conc, _ = concentration_from_signal(series, te_s, times, mask=mask)
    try:
        if user_aif_mask:
            from bolus.perfusion.aif import aif_from_mask
            from bolus.preprocess.mask import user_brain_mask

            voxels = user_brain_mask(user_aif_mask, mask.shape, affine)
            found = aif_from_mask(conc, times, voxels)
        else:
            found = select_aif(
                conc,
                times,
                mask,
                n_voxels=aif_options["n_voxels"],
                method=aif_options["method"],
                vof_scaling=aif_options["vof_scaling"],
            )
    except ValueError as exc:  # empty mask, no curve with a bolus: the data, not the code
        raise SubjectError(pid, subject.mc_dsc, f"no arterial input function: {exc}") from exc
    if found.vof_scale != 1.0:
        log.warning(
            "%s: AIF scaled ×%.2f to the venous output function's area (aif.vof_scaling=%s): "
            "the arterial voxels are partial-volumed",
            pid, found.vof_scale, aif_options["vof_scaling"],
        )  # fmt: skip
    if leakage_correction:
        from bolus.perfusion.leakage import boxerman_weisskoff

        try:
            leakage = boxerman_weisskoff(conc, times, mask)
        except ValueError as exc:
            raise SubjectError(
                pid, subject.mc_dsc, f"leakage correction impossible: {exc}"
            ) from exc
        conc = leakage.corrected
        save_like(leakage.k2, affine, subject.leakage_k2)
    save_like(
        conc.astype(np.float32), affine, subject.conc, header=nib.load(str(subject.mc_dsc)).header
    )
    write_aif_table(subject.aif_tsv, found.times_s, found.curve, vof=found.vof_curve)
    save_like(found.voxel_mask.astype(np.uint8), affine, subject.aif_mask, dtype=np.uint8)
    # CBV up to a constant factor, the same for every SVD method (∫C_t / ∫C_a)
    relative_cbv = np.zeros(mask.shape)
    curves = np.nan_to_num(conc[mask].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    relative_cbv[mask] = np.clip(trapezoid_area(curves, times), 0.0, None)
    tissue = tissue_mask(mask, cbv=relative_cbv, conc=conc, aif_curve=found.curve)
    save_like(tissue.astype(np.uint8), affine, subject.tissue_mask, dtype=np.uint8)


def compute_maps(conc, times_s, aif_curve, method: str, mask, svd=None, constants=None) -> dict:
    """One SVD method's maps ``{map: array}``; ``svd`` and ``constants``: config sections
    (the method reads only its own options, :mod:`bolus.perfusion.methods`)."""
    from bolus.perfusion.maps import perfusion_maps
    from bolus.perfusion.methods import get_method

    entry = get_method(method)
    return perfusion_maps(
        conc,
        times_s,
        aif_curve,
        entry.name,
        mask=mask,
        constants=PerfusionConstants.from_config(section("constants", constants)),
        **entry.keywords(section("svd", svd)),
    )


def maps_from_files(
    conc_path, aif_tsv, method: str, out_maps: dict, mask_path=None, svd=None, constants=None
) -> list[Path]:
    """One method's maps from a concentration series and an AIF table, written to
    ``out_maps`` (``{map: path}``, e.g. :meth:`bolus.paths.SubjectPaths.maps`)."""
    import numpy as np

    from bolus.io.nifti import load_volume, save_like
    from bolus.io.tables import read_aif_table

    conc, affine = load_volume(conc_path)
    times, curve = read_aif_table(aif_tsv)
    if conc.ndim != 4 or conc.shape[-1] != times.size:
        raise ValueError(
            f"{conc_path}: {conc.shape[-1] if conc.ndim == 4 else 'no'} time points, "
            f"but {aif_tsv} has {times.size}"
        )
    mask = load_volume(mask_path)[0] > 0 if mask_path else None
    maps = compute_maps(conc, times, curve, method, mask, svd, constants)
    written = []
    for name, path in out_maps.items():
        save_like(np.asarray(maps[name], dtype=np.float32), affine, path)
        written.append(Path(path))
    return written


def svd_maps_subject(subject: paths.SubjectPaths, method: str, svd=None, constants=None):
    """The maps of one SVD method (CBF, CBV, MTT, Tmax, TTP) from the perfusion stage's
    concentration series and AIF, inside the brain mask."""
    return maps_from_files(
        subject.conc, subject.aif_tsv, method, subject.maps(method), subject.brain_mask,
        svd, constants,
    )  # fmt: skip


def perfusion_and_maps(subject: paths.SubjectPaths, config=None, *, user_aif_mask=None) -> None:
    """The perfusion stage, then every configured SVD method's maps (``bolus perfusion``;
    the workflow runs them as separate jobs). ``config``: a whole, possibly partial config."""
    from bolus.config import with_defaults

    config = with_defaults(config)
    perfusion_subject(
        subject, modality=config["modality"], aif=config["aif"],
        concentration=config["concentration"], user_aif_mask=user_aif_mask,
    )  # fmt: skip
    for method in config["svd"]["methods"]:
        svd_maps_subject(subject, method, config["svd"], config["constants"])


# ----------------------------------------------------------------------------- metrics
def subject_metrics_table(
    subject: paths.SubjectPaths,
    methods,
    *,
    reference: str | None = None,
    registration: bool = False,
    lesion: dict | None = None,
    reference_dir=None,
    lesion_mask=None,
    tissue_labels=None,
):
    """Every method's maps against the reference → long table (participant_id, method,
    map, region, metric, value), ``subject.metrics_tsv``. ``reference`` and
    ``registration``: config ``reference`` and ``reference_registration``
    (:func:`bolus.evaluate.reference.subject_reference`); ``lesion``: config section.
    Regions: ``bolus.evaluate.regions`` (grey and white matter from ``tissue_labels`` or the
    reference_dir's ``labels.nii.gz`` when there is one)."""
    from bolus.evaluate.aggregate import subject_metrics, write_tsv
    from bolus.evaluate.reference import method_maps, subject_reference
    from bolus.evaluate.regions import load_tissue_masks
    from bolus.io.nifti import load_volume, resample_to_grid, voxel_size_mm

    pid = subject.pid
    mask, affine = load_volume(subject.brain_mask)
    predictions = method_maps(subject, methods)
    reference_maps, mask = subject_reference(
        subject, mask > 0, affine, predictions,
        reference=section("reference", reference), reference_dir=reference_dir,
        registration=registration,
    )  # fmt: skip
    user_lesion = None
    if lesion_mask:
        data, lesion_affine = load_volume(lesion_mask)
        user_lesion = resample_to_grid(data, lesion_affine, mask.shape, affine, order=0) > 0
    tissue = load_tissue_masks(pid, mask.shape, affine, reference_dir, tissue_labels)
    table = subject_metrics(
        pid,
        predictions,
        reference_maps,
        mask,
        tuple(voxel_size_mm(affine)),
        section("lesion", lesion)["tmax_threshold_s"],
        lesion_mask=user_lesion,
        tissue=tissue,
    )
    write_tsv(table, subject.metrics_tsv)
    return table


# ----------------------------------------------------------------------------- study
def study_outputs(
    participants_tsv, subjects, output_dir, *, seed: int = 0, study=None, models=()
) -> Path:
    """qc.tsv, and subjects.tsv, study.tsv, paired.tsv, study.md and excluded.tsv over the
    subjects that completed every stage (config ``study``: strata, baseline and, with learned
    models, the subjects scored); the others are listed, with their reason, as exclusions.
    Every learned model's training verdict goes into qc.tsv and study.md (a model that was
    skipped or failed, and why)."""
    from bolus.evaluate.aggregate import available_strata, write_study_tables
    from bolus.participants import read_participants
    from bolus.qc import completed, exclusions, model_verdicts, qc_table

    participants = read_participants(participants_tsv, seed=seed)
    qc = qc_table(output_dir, subjects, models=models)
    atomic.write_table(paths.qc_table(output_dir), qc)
    excluded = exclusions(qc)
    atomic.write_table(paths.excluded_table(output_dir), excluded)
    done = completed(qc)
    study = section("study", study)
    participants = participants.reset_index(drop=True)
    write_study_tables(
        [paths.SubjectPaths(output_dir, pid).metrics_tsv for pid in done],
        output_dir,
        participants=participants,
        strata=available_strata(participants, study["strata"]),
        baseline=study["baseline"],
        excluded=excluded,
        models=list(models),
        scope=study["subjects"],
        model_verdicts=model_verdicts(output_dir, models),
    )
    return paths.study_table(output_dir)
