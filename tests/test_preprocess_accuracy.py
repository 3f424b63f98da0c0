"""End to end on simulated data: motion, vendor conventions, several series per folder and
CT perfusion do not cost map accuracy beyond what the physics of the acquisition allows.

Every case simulates the same stroke subject (48×48×8×40: 4.6 mm pixels, 9 mm slices),
writes its DICOM, then converts, preprocesses (ANTs motion correction, brain mask) and
computes oSVD maps; r is the Pearson correlation of CBF and CBV with the simulator's truth
inside the computed brain mask where the truth is defined (brain tissue). Results are
computed once per module and shared by the tests.

Measured (``pytest tests/test_preprocess_accuracy.py -s``), CBF / CBV r:

====================================================  ===========
still head, standard export                           0.90 / 0.83
same, in a folder with a localizer and a shorter      0.90 / 0.83
dynamic series (the longest one is chosen)            (± 0.001)
2 mm drift, Siemens slice-major export, ANTs          0.61 / 0.54
2 mm drift corrected with the true motion (oracle)    0.53 / 0.51
CT perfusion (NIfTI, ``modality: ctp``), still head   0.89 / 0.82
CT perfusion, no motion correction: NIfTI / DICOM     0.889 / 0.803
(dcm2niix), the same HU                               0.889 / 0.803
====================================================  ===========

Absolute level (mean over the brain / the truth's), CBF / CBV: still 0.74 / 1.00; 2 mm
drift 0.79 / 0.89 with the default ``aif.vof_scaling: auto`` (the AIF scaled ×3.0 to the
vein's area), 2.35 / 2.64 without it; true motion undone (oracle) 0.79 / 0.95.

CT is fragile under motion correction: skull (1000 HU) beside brain (30 HU, peak enhancement
15–20 HU) turns a registration error of 0.05 mm into ≈ 10 HU of false enhancement in edge
voxels. The still CT head corrected by ANTs gives CBV r 0.82 from the NIfTI and 0.74 from the
same data converted from DICOM (rows stored flipped, so ANTs' random metric points differ and
the registrations differ by ≈ 0.05 mm); uncorrected, both give 0.80.

Two more subjects and drifts of 0.5, 1 and 2 mm (``python benchmarks/bench_motion.py
--drift-mm D``, README): ANTs stays within −0.02 of the true-motion bound in r on all of
them, and the still head's r is out of reach of both (CBV r −0.09 to −0.20 already at
0.5 mm).

ANTs runs with one ITK thread in every bolus process (:mod:`bolus.preprocess.itk`), so
reruns give the same figures.

Why a moving head stays below a still one here (measured on the library functions, noise-free
with the true AIF): the drift moves the head by 0.2–0.4 voxel; the acquisition mixes
neighbouring voxels (partial volume: the simulator moves the object trilinearly, which is
exact for its voxel-wise constant anatomy) and any rigid correction interpolates once more.
With the **true** motion undone (oracle) r falls from 0.98 / 1.00 (still) to 0.58 / 0.51.
Two mechanisms, both physical at 4.6 × 4.6 × 9 mm: (1) arteries are one voxel wide and
carry ≈ 20× the tissue ΔR2*: mixed into their neighbours they dominate CBF (without the
vessels' neighbours the oracle reaches 0.71 / 0.53); (2) tissue next to CSF (S0 2400),
skull (80) or air changes its baseline signal by up to tens of % as the mixing weights vary
with the drift, a ΔR2* error of several 1/s against a grey-matter peak of ≈ 4 1/s, which
the time integral of CBV accumulates (with the exact time-varying baseline the oracle CBV
reaches 0.80 without the vessels' neighbours; estimating that baseline from the noisy,
already blurred pre-bolus mean recovered ≤ 0.03, so it is not done). Registration is not
the loss: ANTs reaches the oracle (above); ANTs- and oracle-corrected volumes differ by an
RMS of 25–38 (2–3 % of grey matter's S0), a moved volume and the still one by 150–260
(noise-free, in the head); and the truth maps are in the position
the pipeline aligns to (the mean pre-bolus head position; truth at volume 0 cost 0.15 in r).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SEED, SUBJECT, MATRIX, N_TIMEPOINTS, DRIFT_MM = 9, 1, (48, 48, 8), 40, 2.0


def _simulate(motion_mm):
    from bolus.simulate.cohort import simulate_subject

    return simulate_subject(
        SEED, SUBJECT, "stroke", matrix=MATRIX, n_timepoints=N_TIMEPOINTS, motion_mm=motion_mm
    )


def _write(folder, sim, signal=None, *, vendor=None, extra_series=False):
    """The DSC series (series 2) and a localizer (series 1) in one flat DICOM folder; with
    ``extra_series`` also a second, shorter dynamic series (series 3, the first 20 volumes
    of another acquisition): a test bolus or an aborted run, which selection must skip."""
    from bolus.simulate.dicom_writer import synthetic_exam, write_dsc_series, write_localizer_series

    exam = synthetic_exam(SEED, SUBJECT)
    grid = sim.phantom.grid
    write_localizer_series(folder, exam=exam, series_number=1)
    signal = sim.signal if signal is None else signal
    write_dsc_series(
        folder, signal, grid, tr_s=sim.tr_s, te_s=sim.te_s, exam=exam, vendor=vendor,
        series_number=2,
    )  # fmt: skip
    if extra_series:
        short = _simulate(0.0).signal[..., :20] * 0.9
        write_dsc_series(
            folder, short, grid, tr_s=sim.tr_s, te_s=sim.te_s, exam=exam, series_number=3,
            description="ep2d_perf_testbolus", start_time_s=exam.study_time_s + 120.0,
        )  # fmt: skip


def _pipeline_pcc(folder, sim, *, motion=True, nifti=None, modality="dsc"):
    """Convert (the DICOM folder, or ``nifti``), preprocess, oSVD; Pearson r of CBF and CBV
    with the truth."""
    from bolus import paths, stages
    from bolus.evaluate.reference import load_reference_maps
    from bolus.io.nifti import load_volume
    from bolus.simulate.cohort import write_truth

    write_truth(folder / "truth", sim)
    out = folder / "out"
    row = {"participant_id": "sub-01"}
    row.update({"dsc_nifti": str(nifti)} if nifti else {"dicom_dir": str(folder / "dicom")})
    stages.convert_subject(row, out / "dsc.nii.gz", out / "dsc.json", modality=modality)
    subject = paths.SubjectPaths.at_prefix(out / "sub-01").with_input(
        dsc=out / "dsc.nii.gz", dsc_json=out / "dsc.json"
    )
    stages.preprocess_subject(subject, {"enabled": motion}, workers=2)
    stages.perfusion_and_maps(subject, {"svd": {"methods": ["osvd"]}, "modality": modality})
    mask, affine = load_volume(subject.brain_mask)
    reference = load_reference_maps(folder / "truth", mask.shape, affine)
    inside = (mask > 0) & np.isfinite(reference["cbf"])
    result = {}
    for name in ("cbf", "cbv"):
        pred = load_volume(out / f"sub-01_desc-osvd_{name}.nii.gz")[0]
        ok = inside & np.isfinite(pred)
        result[name] = float(np.corrcoef(pred[ok], reference[name][ok])[0, 1])
        result[f"{name}_scale"] = float(pred[ok].mean() / reference[name][ok].mean())
    result["selected"] = json.loads((out / "dsc.json").read_text()).get("SourceSeriesDescription")
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dcm2niix):
    """Each case's r, computed on first use."""
    from bolus.simulate.phantom import undo_motion

    cache: dict[str, dict] = {}
    still, moving = _simulate(0.0), _simulate(DRIFT_MM)

    def case(name: str) -> dict:
        if name in cache:
            return cache[name]
        folder = tmp_path_factory.mktemp(name)
        if name == "still":
            _write(folder / "dicom", still)
            cache[name] = _pipeline_pcc(folder, still)
        elif name == "several_series":
            _write(folder / "dicom", still, extra_series=True)
            cache[name] = _pipeline_pcc(folder, still)
        elif name == "moving":
            _write(folder / "dicom", moving, vendor="siemens")
            cache[name] = _pipeline_pcc(folder, moving)
            estimated = pd.read_csv(folder / "out" / "sub-01_motion.tsv", sep="\t")
            cache[name]["motion_r"] = [  # |r|: image axes and transform direction set the sign
                abs(float(np.corrcoef(estimated[column], moving.motion[:, axis])[0, 1]))
                for axis, column in enumerate(("trans_x_mm", "trans_y_mm", "trans_z_mm"))
            ]
        elif name == "ctp":
            from bolus.simulate.ctp import ctp_series, write_ctp_nifti

            hu = ctp_series(still, np.random.default_rng([SEED, SUBJECT, 0xC7]))
            nifti = write_ctp_nifti(folder / "nifti", hu, still)
            cache[name] = _pipeline_pcc(folder, still, nifti=nifti, modality="ctp")
        elif name in ("ctp_nifti_no_mc", "ctp_dicom_no_mc"):
            from bolus.simulate.ctp import ctp_series, write_ctp_nifti
            from bolus.simulate.dicom_writer import synthetic_exam, write_ctp_series

            hu = ctp_series(still, np.random.default_rng([SEED, SUBJECT, 0xC7]))
            nifti = None
            if name == "ctp_nifti_no_mc":
                nifti = write_ctp_nifti(folder / "nifti", hu, still)
            else:
                write_ctp_series(
                    folder / "dicom", hu, still.phantom.grid, tr_s=still.tr_s,
                    exam=synthetic_exam(SEED, SUBJECT),
                )  # fmt: skip
            cache[name] = _pipeline_pcc(folder, still, motion=False, nifti=nifti, modality="ctp")
        elif name == "oracle":  # the true motion undone: the bound of any rigid correction
            undone = undo_motion(moving.signal, moving.phantom.grid, moving.motion)
            _write(folder / "dicom", moving, undone)
            cache[name] = _pipeline_pcc(folder, moving, motion=False)
        print(f"PCC {name}: {cache[name]}")
        return cache[name]

    return case


def test_motion_correction_tracks_the_drift_and_reaches_the_true_motion_bound(runs):
    """A 2 mm drifting head exported slice-major (Siemens convention, which dcm2niix alone
    scrambles): after conversion the estimated translations follow the simulated ones
    (|r| > 0.9 on every axis), and after motion correction and oSVD, CBF and CBV correlate
    with the truth as well as when the true motion is undone (oracle), within 0.05 in r.
    Tolerance: ANTs estimates the motion from noisy volumes to ≈ 0.1–0.2 mm (1/30–1/20 of a
    4.6 mm pixel) and aligns to the mean pre-bolus image rather than the exact mean position;
    the oracle's r itself moves by a few hundredths with the noise and the AIF chosen. The
    r bound alone cannot tell correction from none on this grid (the interpolation costs
    about what the misalignment does: uncorrected 0.45 / 0.42 against the oracle's
    0.41 / 0.51 on the arrays; the wrong transform direction 0.37 / 0.40), hence the
    tracking check; a scrambled series fails both."""
    still, moving, oracle = runs("still"), runs("moving"), runs("oracle")
    assert still["cbf"] > 0.8 and still["cbv"] > 0.75
    assert min(moving["motion_r"]) > 0.9, moving["motion_r"]
    for name in ("cbf", "cbv"):
        assert moving[name] >= oracle[name] - 0.05, (name, moving, oracle)


def test_moving_head_keeps_the_absolute_scale_of_the_true_motion_bound(runs):
    """The absolute level of CBF and CBV (mean over the brain / the truth's). With the 2 mm
    drift the one-voxel arteries lose ≈ 60 % of their area to partial volume (ΔR2* of a
    mixed voxel is −ln of the mean signal, which the dark arterial part barely moves): the
    AIF left unscaled put CBF and CBV at 2.35 and 2.64× the truth (still head: 0.74 and
    1.00×). The default ``aif.vof_scaling: auto`` scales the AIF to the sinus's area
    (∫VOF/∫AIF ≈ 3.0 here, > 1.5; still head ≈ 1.17: not scaled), which gives 0.79 / 0.89×,
    the level of the series with the true motion undone (oracle: 0.79 / 0.95×). Tolerance:
    the ANTs-corrected scale within 20 % of the oracle's (the VOF's own area error, 15–19 %
    in the simulator), and within a factor 1.5 of the truth (the partial-volume AIF's error
    was a factor 2.3–2.6). The still head's scale is not the bound: the tissue curves of a
    moving head keep partial-volume errors any rigid correction keeps (on two more subjects,
    seeds 10 and 11: CBV 1.40× and 0.79× the truth, oracle 1.54× and 0.89×, still 0.99×)."""
    moving, oracle = runs("moving"), runs("oracle")
    for name in ("cbf", "cbv"):
        ratio = moving[f"{name}_scale"] / oracle[f"{name}_scale"]
        assert 0.8 <= ratio <= 1.2, (name, oracle, moving)
        assert 1 / 1.5 <= moving[f"{name}_scale"] <= 1.5, (name, moving)


def test_moving_head_is_held_to_the_true_motion_bound(runs):
    """The accuracy a moving head is held to (the owner's decision, issue 17): the bound of
    an exact rigid correction, the simulator's true motion undone (oracle), not the still
    head, which partial volume puts out of reach of any rigid correction at 4.6 × 4.6 × 9 mm
    (module docstring: the oracle itself gives CBF/CBV r 0.53/0.51 against the still head's
    0.90/0.83). For CBF and CBV: r ≥ the oracle's − 0.05, and the level (mean over the
    brain / the truth's) within 20 % of the oracle's, so a regression of motion correction or
    of the AIF's partial-volume scaling fails CI (measured: r 0.61/0.54 vs 0.53/0.51; level
    0.79/0.89 vs 0.79/0.95)."""
    moving, oracle = runs("moving"), runs("oracle")
    for name in ("cbf", "cbv"):
        assert moving[name] >= oracle[name] - 0.05, (name, oracle, moving)
        ratio = moving[f"{name}_scale"] / oracle[f"{name}_scale"]
        assert 0.8 <= ratio <= 1.2, (name, oracle, moving)


def test_several_series_in_one_folder_give_the_same_maps(runs):
    """Localizer, a shorter dynamic series (20 volumes, e.g. a test bolus) and the DSC series
    in one folder: the default rule (most time points) picks the DSC series and the maps
    are those of the folder holding it alone: r equal within 0.005 (same data; ANTs'
    multi-threaded mask registration is not bit-reproducible: measured differences ≤ 0.001)."""
    still, several = runs("still"), runs("several_series")
    assert several["selected"] == still["selected"] == "ep2d_perf"
    for name in ("cbf", "cbv"):
        assert several[name] == pytest.approx(still[name], abs=0.005)


def test_ct_perfusion_maps_match_the_truth_like_dsc(runs):
    """The same still subject seen by CT (:mod:`bolus.simulate.ctp`: HU = HU0 + k·C, arterial
    peak 350 HU, σ 2 HU), given as a NIfTI with ``modality: ctp``: motion correction, brain
    mask (template registered to a CT image), HU − baseline concentration, automatic AIF and
    oSVD give CBF and CBV correlating with the truth at r ≥ 0.8, and no worse than the DSC
    series of the same subject by more than 0.05. Tolerance: CT concentration is linear in
    HU (no log, no T2* of blood), and σ was chosen to give grey matter the DSC's
    contrast-to-noise ratio, so the two modalities should agree within the few hundredths
    that noise and the mask (which differs between a CT and an MR image) move r."""
    still, ctp = runs("still"), runs("ctp")
    for name in ("cbf", "cbv"):
        assert ctp[name] >= 0.8, (name, ctp)
        assert ctp[name] >= still[name] - 0.05, (name, still, ctp)


def test_ct_perfusion_from_dicom_gives_the_maps_of_its_nifti(runs):
    """The same CT series written as CT DICOM (HU + 1024 stored, RescaleIntercept −1024, no
    EchoTime or RepetitionTime: the frame interval is in the AcquisitionTimes) and converted
    by dcm2niix gives the maps of the NIfTI path: both hold the same integer HU in the same
    world grid (dcm2niix stores the rows flipped), so r agrees within 0.005 (measured:
    0.0006). Without motion correction: ANTs samples its metric at random points of the
    voxel grid, so the two voxel orders give registrations differing by a few hundredths of
    a mm, and on CT that moves r by up to 0.08 (module docstring)."""
    nifti, dicom = runs("ctp_nifti_no_mc"), runs("ctp_dicom_no_mc")
    assert dicom["selected"] == "CTP Brain 5mm"
    for name in ("cbf", "cbv"):
        assert dicom[name] == pytest.approx(nifti[name], abs=0.005), (name, nifti, dicom)
