"""The simulated demo cohort: DICOM series, truth maps and participants.tsv.

:func:`simulate_cohort` writes::

    <out_dir>/participants.tsv          participant_id, dicom_dir, reference_dir, split, group,
                                        site, tof_nifti, tof_dicom_dir
    <out_dir>/sourcedata/sub-XX/dicom/  DSC series (SeriesNumber 2, "ep2d_perf") and a 3-plane
                                        localizer (SeriesNumber 1, "localizer"), one flat folder
    <out_dir>/sourcedata/sub-XX/truth/  cbf cbv mtt tmax ttp lesion labels brain (.nii.gz),
                                        labels.tsv, aif.tsv (true arterial ΔR2*, 1/s, at the
                                        acquisition times), motion.tsv, simulation.json
    <out_dir>/sourcedata/sub-XX/tof/    tof.nii.gz (TOF-MRA-like angiogram on its own finer
                                        grid with the head moved a little, column
                                        ``tof_nifti``), territories.nii.gz (DSC grid) and
                                        tof.json (the head pose between the series)
                                        (:mod:`bolus.simulate.tof`)
    <out_dir>/sourcedata/sub-XX/tof_dicom/  the same TOF as a DICOM series (SeriesNumber 3,
                                        "tof_fl3d_tra"), column ``tof_dicom_dir``

Subjects are ``sub-01``, ``sub-02``, …; subject n has pathology ``pathologies[(n-1) % len]``
(healthy, stroke, tumour, healthy, …), site ``siteA`` (odd n, SIEMENS 1.5 T) or ``siteB``
(even n, GE 3 T). Everything about subject n depends only on (seed, n): a larger cohort
with the same seed starts with the same subjects. Splits (:func:`assign_splits`) are drawn
from the seed: 60 % train, 20 % val from five subjects on, the rest test; at least one
train and one test subject whenever there are two or more.

Truth NIfTIs are in the DSC acquisition grid with the RAS affine that DICOM defines for it
(:attr:`bolus.simulate.phantom.AcquisitionGrid.affine_ras`); a dcm2niix conversion of the
series may flip axes but describes the same world coordinates, so resampling truth into
the converted grid by world coordinates lines up voxel for voxel (with motion, with the
head's mean position over the pre-bolus volumes, the motion-correction reference).

Identifiers: the DICOM files carry fake patient and site identifiers (:data:`PHI_TAGS`);
:func:`patient_identifiers` returns those of any subject, to check they never leave the
pipeline.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from bolus.config import PerfusionConstants
from bolus.simulate.dicom_writer import (
    PHI_TAGS,
    Exam,
    localizer_planes,
    synthetic_exam,
    write_ctp_series,
    write_dsc_series,
    write_localizer_series,
    write_tof_series,
)
from bolus.simulate.phantom import (
    LABELS,
    PATHOLOGIES,
    AcquisitionGrid,
    DSCSimulation,
    anatomical_image,
    make_phantom,
    simulate_dsc,
)
from bolus.simulate.tof import draw_pose, simulate_tof, tof_grid, write_tof

__all__ = [
    "PHI_TAGS",
    "TRUTH_MAPS",
    "assign_splits",
    "participant_id",
    "patient_identifiers",
    "simulate_cohort",
    "simulate_subject",
    "synthetic_exam",
    "write_localizer_series",
    "write_subject",
    "write_truth",
]

TRUTH_MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp", "lesion", "labels", "brain")
DSC_SERIES_NUMBER = 2
LOCALIZER_SERIES_NUMBER = 1


def participant_id(subject_number: int, n_subjects: int = 1) -> str:
    """``sub-01`` … (two digits, more when the cohort needs them)."""
    return f"sub-{subject_number:0{max(2, len(str(n_subjects)))}d}"


def patient_identifiers(seed: int, subject_number: int) -> dict[str, str]:
    """The identifier values (keyword → value, keywords :data:`PHI_TAGS`) written into every
    DICOM file of subject ``subject_number`` (1-based) of the cohort simulated with ``seed``."""
    return dict(synthetic_exam(seed, subject_number).identifiers)


def assign_splits(n_subjects: int, seed: int) -> list[str]:
    """``train``/``val``/``test`` per subject (in subject order), reproducible from ``seed``:
    round(60 %) train, round(20 %) val once there are ≥ 5 subjects, the rest test, and at
    least one train and one test whenever n ≥ 2 (a single subject is ``test``)."""
    n = int(n_subjects)
    if n <= 1:
        return ["test"] * n
    n_train = min(max(round(0.6 * n), 1), n - 1)
    n_val = min(round(0.2 * n), n - 1 - n_train) if n >= 5 else 0
    order = np.random.default_rng([int(seed) % 2**63, 0x5117]).permutation(n)
    splits = np.array(["test"] * n, dtype=object)
    splits[order[:n_train]] = "train"
    splits[order[n_train : n_train + n_val]] = "val"
    return list(splits)


def simulate_subject(
    seed: int,
    subject_number: int,
    pathology: str = "healthy",
    *,
    matrix=None,
    constants: PerfusionConstants | None = None,
    **acquisition,
) -> DSCSimulation:
    """Simulate one subject in memory (phantom, noise-free curves, noisy signal, truth).

    The anatomy and perfusion parameters depend only on (seed, subject_number, pathology,
    matrix); the AIF, motion and noise on the acquisition arguments too. ``matrix`` defaults
    to :meth:`AcquisitionGrid.axial`'s; ``acquisition`` (n_timepoints, tr_s, te_s, snr,
    motion_mm, relaxivity_ratio) to :func:`simulate_dsc`'s: the defaults live there only.
    """
    phantom_seq, signal_seq = np.random.SeedSequence(
        [int(seed) % 2**63, int(subject_number)]
    ).spawn(2)
    grid = AcquisitionGrid.axial() if matrix is None else AcquisitionGrid.axial(matrix)
    phantom = make_phantom(np.random.default_rng(phantom_seq), grid, pathology)
    return simulate_dsc(
        phantom,
        np.random.default_rng(signal_seq),
        constants or PerfusionConstants.from_config(),
        **acquisition,
    )


def _nifti(array: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


PERFUSION_MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp")


def write_truth(folder, sim: DSCSimulation, extra: dict | None = None) -> dict[str, Path]:
    """Write the truth maps and side files of ``sim`` into ``folder``; returns name → path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = sim.phantom.grid.affine_ras
    paths = {}
    tissue = sim.truth["brain"] > 0
    for name in TRUTH_MAPS:
        paths[name] = folder / f"{name}.nii.gz"
        data = sim.truth[name]
        if name in PERFUSION_MAPS:  # undefined where there is no tissue: NaN, not a value of 0
            data = np.where(tissue, data, np.nan).astype(np.float32)
        nib.save(_nifti(data, affine), paths[name])
    with open(folder / "labels.tsv", "w", newline="") as fh:
        fh.write("index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in LABELS.items()))
    with open(folder / "aif.tsv", "w", newline="") as fh:
        fh.write("time\tconcentration\n")
        fh.writelines(
            f"{t:.6g}\t{c:.6g}\n" for t, c in zip(sim.time_s, sim.aif_delta_r2s, strict=True)
        )
    with open(folder / "motion.tsv", "w", newline="") as fh:
        names = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
        fh.write("\t".join(names) + "\n")
        fh.writelines("\t".join(f"{v:.6g}" for v in row) + "\n" for row in sim.motion)
    info = {
        "pathology": sim.phantom.pathology,
        "tr_s": sim.tr_s,
        "te_s": sim.te_s,
        "noise_sigma": sim.noise_sigma,
        "units": {"cbf": "ml/100g/min", "cbv": "ml/100g", "mtt": "s", "tmax": "s", "ttp": "s",
                  "aif": "delta R2* (1/s)", "motion": "mm (trans, RAS), rad (rot), vs the mean pre-bolus position"},
        "phantom": sim.phantom.info,
        "aif": sim.parameters,
        **(extra or {}),
    }  # fmt: skip
    (folder / "simulation.json").write_text(json.dumps(info, indent=2, default=float) + "\n")
    return paths


def write_subject(
    dicom_dir, sim: DSCSimulation, exam: Exam, storage: str = "classic"
) -> list[Path]:
    """Write the localizer (series 1) and the DSC series (series 2; ``storage`` classic or
    enhanced multi-frame) of ``sim`` into the flat folder ``dicom_dir``; returns the files."""
    grid = sim.phantom.grid
    centre_lps = grid.affine_lps @ np.r_[(np.array(grid.shape) - 1) / 2.0, 1.0]
    planes = localizer_planes(centre_lps[:3])
    flip = np.array([-1.0, -1.0, 1.0])  # LPS ↔ RAS
    images = [anatomical_image(sim.phantom, p.pixel_centres_lps() * flip) for p in planes]
    paths = write_localizer_series(
        dicom_dir, exam=exam, planes=planes, images=images, series_number=LOCALIZER_SERIES_NUMBER
    )
    paths += write_dsc_series(
        dicom_dir,
        sim.signal,
        grid,
        tr_s=sim.tr_s,
        te_s=sim.te_s,
        exam=exam,
        series_number=DSC_SERIES_NUMBER,
        storage=storage,
    )
    return paths


TOF_SERIES_NUMBER = 3


def write_subject_tof(subject_dir, sim: DSCSimulation, exam: Exam, seed: int, number: int):
    """The subject's TOF-MRA (:mod:`bolus.simulate.tof`) on its own grid (:func:`tof_grid`),
    the head moved by a drawn pose: ``tof/`` (NIfTI, territories, tof.json with the pose)
    and ``tof_dicom/`` (the same image as a DICOM series). Returns the simulation."""
    rng = np.random.default_rng([int(seed) % 2**63, number, 0x70F])
    grid = tof_grid(sim.phantom.grid)
    pose = draw_pose(np.random.default_rng([int(seed) % 2**63, number, 0x9053]))
    tof = simulate_tof(sim.phantom, rng, grid=grid, pose=pose)
    subject_dir = Path(subject_dir)
    write_tof(subject_dir / "tof", tof, grid.affine_ras, sim.phantom.grid.affine_ras)
    info = {"head_pose_ras": pose.round(6).tolist(),
            "note": "TOF-session world point = head_pose_ras @ DSC-session world point (RAS mm)",
            "tof_voxel_mm": [grid.pixel_spacing_mm] * 2 + [grid.slice_spacing_mm],
            "tof_shape": list(grid.shape)}  # fmt: skip
    (subject_dir / "tof" / "tof.json").write_text(json.dumps(info, indent=2) + "\n")
    write_tof_series(
        subject_dir / "tof_dicom", tof.image, grid, exam=exam, series_number=TOF_SERIES_NUMBER
    )
    return tof


def simulate_cohort(
    out_dir,
    n_subjects: int,
    seed: int,
    *,
    pathologies=("healthy", "stroke", "tumour"),
    jobs: int = 1,
    modality: str = "dsc",
    dicom_storage: str = "classic",
    **acquisition,
) -> Path:
    """Simulate ``n_subjects`` subjects into ``out_dir``; returns ``<out_dir>/participants.tsv``.

    ``acquisition``: matrix, n_timepoints, tr_s, te_s, snr (baseline grey-matter SNR, σ =
    S0_GM/snr, Rician), motion_mm (maximum rigid drift; 0: none), relaxivity_ratio
    (tissue/blood ΔR2* relaxivity; keep 1.0 for truth maps that DSC quantification can
    reproduce); defaults as in :func:`simulate_subject`. Existing ``dicom`` and ``truth``
    folders of the subjects written are replaced. ``jobs`` > 1 simulates that many subjects
    at a time in worker processes; every subject depends only on (seed, number), so the
    files are the same as with one. ``modality`` ``ctp`` writes each subject's dynamic series
    as CT perfusion DICOM (:mod:`bolus.simulate.ctp`: the same anatomy, perfusion and truth
    seen in HU; process with ``modality: ctp``) in place of the DSC series.
    ``dicom_storage`` ``enhanced`` writes the dynamic series as one enhanced multi-frame file
    (Enhanced MR / CT Image Storage) instead of one file per image.
    """
    if modality not in ("dsc", "ctp"):
        raise ValueError(f"modality must be dsc or ctp, got {modality!r}")
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be ≥ 1, got {n_subjects}")
    unknown = [p for p in pathologies if p not in PATHOLOGIES]
    if not pathologies or unknown:
        raise ValueError(f"pathologies must be among {PATHOLOGIES}, got {tuple(pathologies)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    constants = PerfusionConstants.from_config()
    splits = assign_splits(n_subjects, seed)
    numbers = range(1, n_subjects + 1)
    args = [
        (
            out,
            n,
            n_subjects,
            seed,
            pathologies,
            splits,
            constants,
            acquisition,
            modality,
            dicom_storage,
        )
        for n in numbers
    ]
    if int(jobs) > 1 and n_subjects > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(int(jobs), n_subjects)) as pool:
            rows = list(pool.map(_write_one_subject, *zip(*args, strict=True)))
    else:
        rows = [_write_one_subject(*a) for a in args]
    path = out / "participants.tsv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_one_subject(
    out,
    number,
    n_subjects,
    seed,
    pathologies,
    splits,
    constants,
    acquisition,
    modality="dsc",
    dicom_storage="classic",
):
    """Simulate and write subject ``number`` of :func:`simulate_cohort`; its participants row."""
    pid = participant_id(number, n_subjects)
    pathology = pathologies[(number - 1) % len(pathologies)]
    sim = simulate_subject(seed, number, pathology, constants=constants, **acquisition)
    subject_dir = out / "sourcedata" / pid
    for sub in ("dicom", "truth", "tof", "tof_dicom"):
        if (subject_dir / sub).exists():
            shutil.rmtree(subject_dir / sub)
    exam = synthetic_exam(seed, number)
    if modality == "ctp":
        from bolus.simulate.ctp import ctp_series

        hu = ctp_series(sim, np.random.default_rng([int(seed) % 2**63, number, 0xC7]))
        write_ctp_series(
            subject_dir / "dicom", hu, sim.phantom.grid, tr_s=sim.tr_s, exam=exam,
            series_number=DSC_SERIES_NUMBER, storage=dicom_storage,
        )  # fmt: skip
    else:
        write_subject(subject_dir / "dicom", sim, exam, storage=dicom_storage)
    site = "siteA" if number % 2 == 1 else "siteB"
    extra = {"participant_id": pid, "seed": int(seed), "site": site,
             "manufacturer": exam.manufacturer, "modality": modality,
             "acquisition_options": {k: acquisition[k] for k in sorted(acquisition)}}  # fmt: skip
    write_truth(subject_dir / "truth", sim, extra)
    write_subject_tof(subject_dir, sim, exam, seed, number)
    return {
        "participant_id": pid,
        "dicom_dir": f"sourcedata/{pid}/dicom",
        "reference_dir": f"sourcedata/{pid}/truth",
        "split": splits[number - 1],
        "group": pathology,
        "site": site,
        "tof_nifti": f"sourcedata/{pid}/tof/tof.nii.gz",
        "tof_dicom_dir": f"sourcedata/{pid}/tof_dicom",
    }
