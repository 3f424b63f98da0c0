"""The cohort simulator: physics of the phantom, DICOM output, dcm2niix round trip."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from bolus.config import PerfusionConstants
from bolus.simulate import phantom as ph
from bolus.simulate.cohort import (
    PHI_TAGS,
    TRUTH_MAPS,
    assign_splits,
    patient_identifiers,
    simulate_cohort,
    simulate_subject,
    synthetic_exam,
    write_localizer_series,
    write_subject,
)

SMALL = {"matrix": (32, 32, 6), "n_timepoints": 30}


def _dcm2niix() -> str | None:
    found = shutil.which("dcm2niix")
    beside = Path(sys.executable).with_name("dcm2niix")
    return found or (str(beside) if beside.exists() else None)


@pytest.fixture(scope="module")
def stroke():
    """A full-size (64×64×12×60) stroke subject at the default SNR."""
    return simulate_subject(3, 2, "stroke")


@pytest.fixture(scope="module")
def healthy():
    return simulate_subject(3, 1, "healthy", **SMALL)


def _peak_drop(sim, label):
    m = sim.phantom.labels == label
    clean = sim.signal_noise_free[m]
    return 1.0 - clean.min(axis=-1) / clean[:, 0]


def _arrival_index(curve, fraction=0.5):
    return int(np.argmax(curve >= fraction * curve.max()))


# ----------------------------------------------------------------------------- anatomy
def test_phantom_holds_every_tissue_and_enough_pure_arterial_voxels(stroke):
    counts = np.bincount(stroke.phantom.labels.ravel(), minlength=len(ph.LABELS))
    for label in (
        ph.SCALP,
        ph.SKULL,
        ph.CSF,
        ph.GM,
        ph.WM,
        ph.ARTERY,
        ph.VEIN,
        ph.CORE,
        ph.PENUMBRA,
    ):
        assert counts[label] > 0, ph.LABELS[label]
    assert counts[ph.TUMOUR] == 0
    assert counts[ph.GM] > counts[ph.ARTERY] * 20
    # the pipeline averages 10 arterial voxels by default: several per slice in a few slices
    per_slice = (stroke.phantom.labels == ph.ARTERY).sum(axis=(0, 1))
    assert counts[ph.ARTERY] >= 20 and np.sum(per_slice >= 3) >= 3
    # the sinus is larger than any one arterial segment and lies posterior/superior midline
    assert counts[ph.VEIN] > counts[ph.ARTERY]


def test_anatomy_differs_between_subjects_but_not_between_runs():
    grid = ph.AcquisitionGrid.axial(SMALL["matrix"])
    a = ph.make_phantom(np.random.default_rng(1), grid)
    b = ph.make_phantom(np.random.default_rng(1), grid)
    c = ph.make_phantom(np.random.default_rng(2), grid)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert not np.allclose(a.mni_to_world, c.mni_to_world)


def test_tumour_is_hyperperfused():
    grid = ph.AcquisitionGrid.axial(SMALL["matrix"])
    tumour = ph.make_phantom(np.random.default_rng(5), grid, "tumour")
    m = tumour.labels == ph.TUMOUR
    assert m.sum() > 0
    assert 90 <= tumour.cbf[m].min() and tumour.cbf[m].max() <= 120
    assert 8 <= tumour.cbv[m].min() and tumour.cbv[m].max() <= 10
    assert tumour.cbf[m].mean() > 1.4 * tumour.cbf[tumour.labels == ph.GM].mean()


# ----------------------------------------------------------------------------- signal physics
def test_arterial_signal_drops_realistically(stroke):
    drop = _peak_drop(stroke, ph.ARTERY)
    assert np.all((drop > 0.70) & (drop < 0.95))
    peak = stroke.aif_delta_r2s.max()
    assert 70 <= peak <= 90  # peak ΔR2* (1/s) of pure arterial blood at TE 30 ms
    gm = _peak_drop(stroke, ph.GM).mean()
    assert 0.08 < gm < 0.2  # grey matter: a drop that survives realistic noise


def test_tissue_signal_drops_less_than_arterial_and_grey_more_than_white(stroke):
    artery, gm, wm = (_peak_drop(stroke, label).mean() for label in (ph.ARTERY, ph.GM, ph.WM))
    assert 0 < wm < gm < artery
    core, penumbra = (_peak_drop(stroke, label).mean() for label in (ph.CORE, ph.PENUMBRA))
    assert core < penumbra < gm  # less blood volume, less signal drop


def test_artery_voxels_hold_the_aif_itself(stroke):
    m = stroke.phantom.labels == ph.ARTERY
    assert np.allclose(stroke.concentration_mM[m], stroke.aif_mM, rtol=1e-6, atol=1e-6)


def test_truth_cbv_is_the_area_ratio_of_tissue_and_arterial_curves(stroke):
    constants = PerfusionConstants.from_config()
    labels = stroke.phantom.labels
    area_ratio = stroke.concentration_mM.sum(axis=-1) / stroke.aif_mM.sum()
    cbv_from_curves = constants.cbv_scale * area_ratio
    gm = labels == ph.GM
    assert np.allclose(cbv_from_curves[gm], stroke.truth["cbv"][gm], rtol=0.02)
    # slow, late tissue loses a little of its tail at the end of the 90 s acquisition
    brain = stroke.truth["brain"].astype(bool)
    assert np.allclose(cbv_from_curves[brain], stroke.truth["cbv"][brain], rtol=0.06)


def test_venous_curve_is_later_broader_and_larger_than_the_aif(stroke):
    aif, vof = stroke.aif_mM, stroke.vof_mM
    delay = (np.argmax(vof) - np.argmax(aif)) * stroke.tr_s
    assert 4.0 <= delay <= 9.0
    assert vof.sum() > aif.sum()
    assert np.sum(vof > vof.max() / 2) > np.sum(aif > aif.max() / 2)


def test_background_is_rician_noise_of_sigma_gm_s0_over_snr(stroke):
    sigma = ph.S0[ph.GM] / 100.0  # the default snr
    assert stroke.noise_sigma == pytest.approx(sigma)
    background = stroke.signal[stroke.phantom.labels == ph.BACKGROUND]
    # magnitude of complex Gaussian noise around 0: Rayleigh, mean σ·√(π/2)
    assert background.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.03)
    baseline = stroke.signal[stroke.phantom.labels == ph.GM][:, :6]
    assert np.median(baseline.std(axis=-1, ddof=1)) == pytest.approx(sigma, rel=0.15)


def test_csf_is_brightest_then_grey_then_white_matter(stroke):
    labels, s0 = stroke.phantom.labels, stroke.signal[..., :5].mean(axis=-1)
    csf, gm, wm = (np.median(s0[labels == label]) for label in (ph.CSF, ph.GM, ph.WM))
    assert csf > gm > wm > 5 * np.median(s0[labels == ph.BACKGROUND])


def test_equal_relaxivity_by_default_and_tissue_scaled_otherwise(healthy):
    again = simulate_subject(3, 1, "healthy", relaxivity_ratio=2.0, **SMALL)
    gm = healthy.phantom.labels == ph.GM
    artery = healthy.phantom.labels == ph.ARTERY
    assert np.allclose(again.delta_r2s[gm], 2.0 * healthy.delta_r2s[gm], rtol=1e-5)
    assert np.allclose(again.delta_r2s[artery], healthy.delta_r2s[artery])
    assert np.allclose(healthy.delta_r2s, ph.BLOOD_RELAXIVITY * healthy.concentration_mM, rtol=1e-5)


# ----------------------------------------------------------------------------- truth maps
def test_stroke_penumbra_has_tmax_over_6_s_and_healthy_grey_matter_under_3_s(stroke):
    labels, tmax = stroke.phantom.labels, stroke.truth["tmax"]
    assert tmax[labels == ph.PENUMBRA].min() > 6.0
    assert tmax[labels == ph.CORE].min() > 6.0
    assert np.median(tmax[labels == ph.GM]) < 3.0
    assert tmax[np.isin(labels, (ph.GM, ph.WM))].max() < 6.0
    lesion = stroke.truth["lesion"].astype(bool)
    assert np.array_equal(lesion, np.isin(labels, (ph.CORE, ph.PENUMBRA)))


def test_stroke_core_and_penumbra_values(stroke):
    labels, cbf, cbv = stroke.phantom.labels, stroke.truth["cbf"], stroke.truth["cbv"]
    core, penumbra = labels == ph.CORE, labels == ph.PENUMBRA
    assert 8 <= cbf[core].min() and cbf[core].max() <= 12
    assert 20 <= cbf[penumbra].min() and cbf[penumbra].max() <= 25
    assert 3.5 <= cbv[penumbra].min() and cbv[penumbra].max() <= 4.0
    gm = labels == ph.GM
    assert 45 < cbf[gm].mean() < 75 and 3 < cbv[gm].mean() < 5


def test_healthy_subject_has_no_lesion(healthy):
    assert healthy.truth["lesion"].sum() == 0
    assert not np.isin(healthy.phantom.labels, (ph.CORE, ph.PENUMBRA, ph.TUMOUR)).any()


def test_mtt_is_central_volume_and_maps_vanish_outside_brain(stroke):
    truth, brain = stroke.truth, stroke.truth["brain"].astype(bool)
    assert np.allclose(
        truth["mtt"][brain], 60 * truth["cbv"][brain] / truth["cbf"][brain], rtol=1e-5
    )
    assert np.array_equal(brain, np.isin(stroke.phantom.labels, ph.BRAIN_TISSUE))
    for name in ("cbf", "cbv", "mtt", "tmax", "ttp"):
        assert np.all(truth[name][~brain] == 0), name
        assert np.all(truth[name][brain] > 0) or name == "tmax", name


def test_ttp_follows_the_arterial_peak_and_is_later_in_the_penumbra(stroke):
    labels, ttp = stroke.phantom.labels, stroke.truth["ttp"]
    aif_peak = stroke.time_s[np.argmax(stroke.aif_mM)]
    assert np.median(ttp[labels == ph.GM]) > aif_peak - stroke.tr_s
    assert np.median(ttp[labels == ph.PENUMBRA]) > np.median(ttp[labels == ph.GM]) + 4


def test_a_later_bolus_shifts_the_curves_not_the_truth():
    """``aif_arrival_s`` moves the arterial arrival (a longer baseline): the AIF and the
    tissue peaks move with it, the truth maps relative to the AIF (CBF, CBV, MTT, Tmax)
    stay, TTP moves by the arrival's shift. The default range draws as before."""
    small = {**SMALL, "n_timepoints": 60}  # 88.5 s: the late bolus passes within it
    early = simulate_subject(5, 1, "stroke", snr=np.inf, **small)
    late = simulate_subject(5, 1, "stroke", snr=np.inf, aif_arrival_s=(24.0, 24.0), **small)
    assert 12.0 <= early.parameters["arrival_s"] <= 16.0
    assert late.parameters["arrival_s"] == 24.0
    shift = 24.0 - early.parameters["arrival_s"]
    for name in ("cbf", "cbv", "mtt", "tmax"):
        np.testing.assert_allclose(late.truth[name], early.truth[name], rtol=1e-6, err_msg=name)
    brain = early.phantom.brain
    np.testing.assert_allclose(
        late.truth["ttp"][brain], early.truth["ttp"][brain] + shift, atol=0.11
    )  # atol: the fine grid's step
    peak = lambda sim: sim.time_s[np.argmax(sim.aif_mM)]  # noqa: E731
    assert abs(peak(late) - peak(early) - shift) <= early.tr_s


# ----------------------------------------------------------------------------- motion
def test_motion_is_a_smooth_drift_about_the_mean_pre_bolus_position():
    """The truth maps are in the head's mean position over the volumes before the arterial
    arrival (the motion-correction reference): the drift averages 0 there."""
    still = simulate_subject(4, 1, snr=np.inf, **SMALL)
    moving = simulate_subject(4, 1, snr=np.inf, motion_mm=3.0, **SMALL)
    n_pre = int(np.searchsorted(moving.time_s, moving.parameters["arrival_s"]))
    assert n_pre >= 2
    np.testing.assert_allclose(moving.motion[:n_pre].mean(axis=0), 0.0, atol=1e-12)
    assert np.abs(moving.motion[:, :3]).max() <= 3.0 + 1e-9
    assert np.abs(np.diff(moving.motion[:, :3], axis=0)).max() < 1.0  # smooth: < 1 mm per TR
    assert not np.allclose(moving.signal[..., -1], still.signal[..., -1], atol=1.0)


# ----------------------------------------------------------------------------- cohort and DICOM
@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    return simulate_cohort(out, 3, 11, **SMALL)


def test_participants_tsv_lists_subjects_with_train_and_test(cohort):
    with open(cohort) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert list(rows[0]) == [
        "participant_id",
        "dicom_dir",
        "reference_dir",
        "split",
        "group",
        "site",
        "tof_nifti",
        "tof_dicom_dir",
    ]
    assert [r["participant_id"] for r in rows] == ["sub-01", "sub-02", "sub-03"]
    assert [r["group"] for r in rows] == ["healthy", "stroke", "tumour"]
    assert [r["site"] for r in rows] == ["siteA", "siteB", "siteA"]
    assert {"train", "test"} <= {r["split"] for r in rows}
    for r in rows:
        assert (cohort.parent / r["dicom_dir"]).is_dir()
        for name in TRUTH_MAPS:
            assert (cohort.parent / r["reference_dir"] / f"{name}.nii.gz").is_file()


def test_splits_are_reproducible_and_hold_train_and_test():
    for n in range(2, 12):
        splits = assign_splits(n, 5)
        assert splits == assign_splits(n, 5)
        assert "train" in splits and "test" in splits
    assert assign_splits(10, 5).count("train") == 6


def test_dicom_files_are_mr_images_in_time_major_order_with_identifiers(cohort):
    folder = cohort.parent / "sourcedata" / "sub-01" / "dicom"
    files = sorted(folder.glob("*.dcm"))
    nx, ny, nz = SMALL["matrix"]
    assert len(files) == nz * SMALL["n_timepoints"] + 3
    datasets = [pydicom.dcmread(f) for f in files]
    dsc = [d for d in datasets if d.SeriesDescription == "ep2d_perf"]
    localizer = [d for d in datasets if d.SeriesDescription == "localizer"]
    assert len(localizer) == 3 and len({tuple(d.ImageOrientationPatient) for d in localizer}) == 3
    assert len({d.SeriesInstanceUID for d in datasets}) == 2
    assert len({d.SOPInstanceUID for d in datasets}) == len(datasets)
    assert len({d.StudyInstanceUID for d in datasets}) == 1
    first = dsc[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.MRImageStorage and first.Modality == "MR"
    assert (first.Rows, first.Columns) == (ny, nx) and first.pixel_array.dtype == np.uint16
    assert float(first.EchoTime) == 30 and float(first.RepetitionTime) == 1500
    for d in dsc:
        dz = float(d.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
        t, k = d.AcquisitionNumber - 1, round(dz / float(d.SpacingBetweenSlices))
        assert d.InstanceNumber == t * nz + k + 1
        assert (
            d.TemporalPositionIdentifier == t + 1
            and d.NumberOfTemporalPositions == SMALL["n_timepoints"]
        )
    times = sorted({(d.AcquisitionNumber, d.AcquisitionTime) for d in dsc})
    seconds = [int(a[:2]) * 3600 + int(a[2:4]) * 60 + float(a[4:]) for _, a in times]
    assert np.allclose(np.diff(seconds), 1.5)
    phi = patient_identifiers(11, 1)
    assert set(phi) == set(PHI_TAGS)
    for d in (first, localizer[0]):
        assert {tag: str(d.data_element(tag).value) for tag in PHI_TAGS} == phi


def test_same_seed_gives_identical_dicom_and_another_seed_differs(tmp_path):
    kwargs = {"matrix": (16, 16, 4), "n_timepoints": 12}
    runs = [
        simulate_cohort(tmp_path / name, 1, seed, **kwargs)
        for name, seed in (("a", 1), ("b", 1), ("c", 2))
    ]
    files = [sorted((p.parent / "sourcedata" / "sub-01" / "dicom").glob("*.dcm")) for p in runs]
    assert [f.name for f in files[0]] == [f.name for f in files[1]]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(files[0], files[1], strict=True))
    pixels = [
        np.stack([pydicom.dcmread(f).pixel_array for f in fs if "_002_" in f.name]) for fs in files
    ]
    assert np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[0], pixels[2])
    assert patient_identifiers(1, 1) != patient_identifiers(2, 1)


def test_localizer_alone_is_a_valid_non_dynamic_series(tmp_path):
    paths = write_localizer_series(tmp_path / "loc", seed=3)
    assert len(paths) == 3
    for p in paths:
        d = pydicom.dcmread(p)
        assert d.SeriesDescription == "localizer" and d.SOPClassUID == pydicom.uid.MRImageStorage
        assert "NumberOfTemporalPositions" not in d and d.pixel_array.shape == (128, 128)
        assert {tag: str(d.data_element(tag).value) for tag in PHI_TAGS} == patient_identifiers(
            3, 1
        )


def test_truth_niftis_carry_the_dicom_grid_affine(cohort):
    sim = simulate_subject(11, 2, "stroke", **SMALL)
    truth = cohort.parent / "sourcedata" / "sub-02" / "truth"
    img = nib.load(truth / "cbf.nii.gz")
    assert np.allclose(img.affine, sim.phantom.grid.affine_ras)
    tissue = sim.truth["brain"] > 0
    assert np.allclose(img.get_fdata()[tissue], sim.truth["cbf"][tissue], rtol=1e-6)
    assert np.isnan(img.get_fdata()[~tissue]).all(), "no perfusion value where there is no tissue"
    # RAS: x decreases along columns (patient left), y decreases along rows (posterior)
    assert img.affine[0, 0] < 0 and img.affine[1, 1] < 0 and img.affine[2, 2] > 0
    first = pydicom.dcmread(cohort.parent / "sourcedata" / "sub-02" / "dicom" / "IM_002_00001.dcm")
    corner = img.affine @ np.array([0, 0, 0, 1.0])
    assert np.allclose(
        [-corner[0], -corner[1], corner[2]],
        [float(v) for v in first.ImagePositionPatient],
        atol=1e-4,
    )
    aif = np.loadtxt(truth / "aif.tsv", skiprows=1)
    assert np.allclose(aif[:, 1], sim.aif_delta_r2s, rtol=1e-5)
    assert json.loads((truth / "simulation.json").read_text())["pathology"] == "stroke"


def _convert(dicom_dir, out):
    exe = _dcm2niix()
    out.mkdir()
    subprocess.run([exe, "-z", "y", "-b", "y", "-f", "%s_%d", "-o", str(out), str(dicom_dir)],
                   check=True, capture_output=True)  # fmt: skip
    img = nib.load(out / "2_ep2d_perf.nii.gz")
    sidecar = json.loads((out / "2_ep2d_perf.json").read_text())
    return img, sidecar


def _truth_into_converted(values, truth_affine, converted_affine):
    """Map each truth voxel through world coordinates into the converted grid."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in values.shape], indexing="ij"), -1).reshape(
        -1, 3
    )
    a = np.linalg.inv(converted_affine) @ truth_affine
    target = index @ a[:3, :3].T + a[:3, 3]
    assert np.allclose(target, np.rint(target), atol=1e-3)  # the grids coincide
    return np.rint(target).astype(int)


@pytest.mark.skipif(_dcm2niix() is None, reason="dcm2niix not installed")
def test_dicom_converts_with_dcm2niix_to_the_right_shape_timing_and_orientation(stroke, tmp_path):
    write_subject(tmp_path / "dicom", stroke, synthetic_exam(3, 2))
    img, sidecar = _convert(tmp_path / "dicom", tmp_path / "nifti")
    assert img.shape == (64, 64, 12, 60)
    assert sidecar["EchoTime"] == pytest.approx(0.03) and sidecar[
        "RepetitionTime"
    ] == pytest.approx(1.5)
    data = np.asarray(img.dataobj)
    target = _truth_into_converted(
        stroke.phantom.baseline, stroke.phantom.grid.affine_ras, img.affine
    )
    converted = data[target[:, 0], target[:, 1], target[:, 2]]  # (voxels, time)
    assert np.corrcoef(converted[:, 0], stroke.phantom.baseline.ravel())[0, 1] > 0.99
    assert np.abs(converted - stroke.signal.reshape(-1, 60)).max() <= 0.5 + 1e-6  # only rounding
    assert set(sidecar).isdisjoint({"PatientName", "PatientID", "PatientBirthDate"})


@pytest.mark.skipif(_dcm2niix() is None, reason="dcm2niix not installed")
def test_the_other_vendor_converts_too(cohort, tmp_path):
    img, sidecar = _convert(cohort.parent / "sourcedata" / "sub-01" / "dicom", tmp_path / "nifti")
    assert sidecar["Manufacturer"] == "Siemens"
    assert img.shape == SMALL["matrix"] + (SMALL["n_timepoints"],)
    truth = nib.load(cohort.parent / "sourcedata" / "sub-01" / "truth" / "labels.nii.gz")
    target = _truth_into_converted(truth.get_fdata(), truth.affine, img.affine)
    baseline = np.asarray(img.dataobj)[target[:, 0], target[:, 1], target[:, 2], 0]
    labels = truth.get_fdata().ravel()
    assert np.median(baseline[labels == ph.CSF]) > np.median(baseline[labels == ph.WM])
    assert np.median(baseline[labels == ph.WM]) > 10 * np.median(baseline[labels == ph.BACKGROUND])
