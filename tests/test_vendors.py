"""Vendor conventions and series selection: the converter survives what scanners write."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from bolus.io.dicom import (
    affine_from_headers,
    convert_dicom_series,
    discover_series,
    header_ordered_series,
    select_series,
)
from bolus.io.errors import SubjectError
from bolus.simulate.dicom_writer import synthetic_exam, write_dsc_series, write_localizer_series
from bolus.simulate.vendors import VENDORS, irregular_frames


def _in_simulator_axes(image, sim) -> np.ndarray:
    """The converted voxels reoriented into the simulator's (i, j, k) axes (dcm2niix flips
    the rows); checks that the two affines describe the same world grid."""
    from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

    target = sim.phantom.grid.affine_ras
    transform = ornt_transform(io_orientation(image.affine), io_orientation(target))
    reoriented = image.as_reoriented(transform)
    np.testing.assert_allclose(reoriented.affine, target, atol=1e-3)
    return apply_orientation(image.get_fdata(), transform)


@pytest.fixture(scope="module")
def small_sim():
    from bolus.simulate.cohort import simulate_subject

    return simulate_subject(7, 1, matrix=(24, 24, 5), n_timepoints=24)


def _write(folder, sim, **kwargs):
    return write_dsc_series(
        folder, sim.signal, sim.phantom.grid, tr_s=sim.tr_s, te_s=sim.te_s,
        exam=synthetic_exam(7, 1), **kwargs,
    )  # fmt: skip


def test_real_ge_series_rebuilt_from_headers_matches_the_reference(dcm_qa):
    """The header-order rebuild (positions, AcquisitionNumber, PixelSpacing) of the real GE
    classic series gives dcm2niix's reference conversion voxel for voxel, with its affine."""
    files = sorted((dcm_qa / "In" / "20180918GE").rglob("*.dcm"))
    reference = nib.load(dcm_qa / "Ref" / "DCM2NIIX_regression_test_4.nii")
    affine, grid = affine_from_headers(files)
    assert (*grid, 10) == reference.shape
    np.testing.assert_allclose(affine, reference.affine, atol=1e-3)
    rebuilt = header_ordered_series(files, affine, reference.shape)
    np.testing.assert_array_equal(rebuilt, np.asanyarray(reference.dataobj).astype(np.float32))


@pytest.mark.parametrize("storage", ["classic", "enhanced"])
@pytest.mark.parametrize("vendor", VENDORS)
def test_every_vendor_convention_converts_to_the_simulated_series(
    small_sim, dcm2niix, tmp_path, vendor, storage, caplog
):
    """Classic: Siemens slice-major numbering (dcm2niix scrambles it silently), GE without
    slice timing or temporal positions, Philips per-slice TriggerTime (dcm2niix splits it).
    Enhanced: one multi-frame file, frames slice by slice (Philips) or volume by volume
    (dcm2niix stacks those wrongly). The converted voxels are the simulated signal, in
    order, exactly (uint16 rounding only), and the volume times are the simulated ones."""
    _write(tmp_path / "dicom", small_sim, vendor=vendor, storage=storage)
    write_localizer_series(tmp_path / "dicom", exam=synthetic_exam(7, 1), series_number=1)
    with caplog.at_level(logging.INFO, logger="bolus.io.dicom"):
        sidecar = convert_dicom_series(
            tmp_path / "dicom", tmp_path / "d.nii.gz", tmp_path / "d.json", subject="sub-01"
        )
    image = nib.load(tmp_path / "d.nii.gz")
    assert image.shape == small_sim.signal.shape
    expected = np.clip(np.rint(small_sim.signal), 0, None)
    np.testing.assert_array_equal(_in_simulator_axes(image, small_sim), expected)
    np.testing.assert_allclose(sidecar["VolumeTiming"], small_sim.time_s, atol=1e-3)
    assert "chose series 2" in caplog.text and "localizer" in caplog.text
    if storage == "enhanced":
        from bolus.stages import inspect_subject

        assert "(enhanced, 1 file, 120 images, 24 time points)" in caplog.text
        row = {"participant_id": "sub-01", "dicom_dir": str(tmp_path / "dicom")}
        record = inspect_subject(row, tmp_path / "inspect.json")
        assert record["status"] == "ok", record["reason"]
        assert record["series"] == "ep2d_perf (enhanced, 1 file, 120 images, 24 time points)"
        return
    if vendor == "philips":
        assert "--ignore_trigger_times" in caplog.text
    if vendor == "siemens":
        assert "rebuilding the series from the headers" in caplog.text
    if vendor == "ge":
        assert "SliceTiming" not in sidecar


def test_irregular_timing_uses_the_real_volume_times(small_sim, dcm2niix, tmp_path):
    """Unequal intervals: dcm2niix rewrites RepetitionTime to an average; the time axis must be
    the volumes' real onsets (AcquisitionTime), to the millisecond."""
    index = irregular_frames(small_sim.signal.shape[-1], 12, np.random.default_rng(3))
    onsets = small_sim.time_s[index]
    write_dsc_series(
        tmp_path / "dicom", small_sim.signal[..., index], small_sim.phantom.grid,
        tr_s=small_sim.tr_s, te_s=small_sim.te_s, exam=synthetic_exam(7, 1),
        vendor="siemens", frame_times_s=onsets,
    )  # fmt: skip
    sidecar = convert_dicom_series(
        tmp_path / "dicom", tmp_path / "d.nii.gz", tmp_path / "d.json", subject="sub-01"
    )
    assert len(np.unique(np.round(np.diff(onsets), 3))) > 1, "the test needs irregular timing"
    np.testing.assert_allclose(sidecar["VolumeTiming"], onsets - onsets[0], atol=1e-3)
    data = _in_simulator_axes(nib.load(tmp_path / "d.nii.gz"), small_sim)
    np.testing.assert_array_equal(data, np.clip(np.rint(small_sim.signal[..., index]), 0, None))


def test_series_selected_by_number_regex_or_substring(small_sim, tmp_path, caplog):
    """Two perfusion runs in one folder: pick by SeriesNumber, by regex, by substring; the
    default takes the longer; what was found and chosen is logged."""
    folder = tmp_path / "dicom"
    _write(folder, small_sim, series_number=5, description="ep2d_perf")
    short = small_sim.signal[..., :12]
    write_dsc_series(
        folder, short, small_sim.phantom.grid, tr_s=1.5, te_s=0.03,
        exam=synthetic_exam(7, 1), series_number=9, description="PERF_repeat",
    )  # fmt: skip
    found = discover_series(folder, "sub-01")
    with caplog.at_level(logging.INFO, logger="bolus.io.dicom"):
        assert select_series(found, "most_timepoints", "sub-01", folder).number == 5
    assert "ep2d_perf (120 images, 24 time points), PERF_repeat" in caplog.text
    assert select_series(found, "9", "sub-01", folder).number == 9
    assert select_series(found, "number:5", "sub-01", folder).number == 5
    assert select_series(found, 9, "sub-01", folder).number == 9
    assert select_series(found, r"regex:^perf_re", "sub-01", folder).number == 9
    assert select_series(found, r"regex:ep2d|perf", "sub-01", folder).number == 5
    assert select_series(found, "REPEAT", "sub-01", folder).number == 9
    with pytest.raises(SubjectError, match="sub-01: .*no dynamic series matches.*found"):
        select_series(found, "number:3", "sub-01", folder)
    with pytest.raises(SubjectError, match="not a valid regular expression"):
        select_series(found, "regex:(", "sub-01", folder)


def test_enhanced_ct_perfusion_converts_like_the_classic_export(dcm2niix, tmp_path):
    """CT perfusion as one Enhanced CT Image Storage file (rescale in the shared functional
    group) gives the classic export's conversion: same stored values, data type, scaling
    (intercept −1024), volume times; affine within 1e-5 mm (float32 header rounding)."""
    from bolus.simulate.cohort import simulate_subject
    from bolus.simulate.ctp import ctp_series
    from bolus.simulate.dicom_writer import write_ctp_series

    sim = simulate_subject(3, 1, "stroke", matrix=(24, 24, 4), n_timepoints=12, tr_s=2.0)
    hu = np.rint(ctp_series(sim, np.random.default_rng(0)))
    out = {}
    for storage in ("classic", "enhanced"):
        folder = tmp_path / storage
        write_ctp_series(folder / "dicom", hu, sim.phantom.grid, tr_s=2.0,
                         exam=synthetic_exam(3, 1), storage=storage)  # fmt: skip
        sidecar = convert_dicom_series(folder / "dicom", folder / "ct.nii.gz",
                                       folder / "ct.json", subject="sub-01", modality="ctp")  # fmt: skip
        out[storage] = (nib.load(folder / "ct.nii.gz"), sidecar)
    (classic, c_json), (enhanced, e_json) = out["classic"], out["enhanced"]
    assert len(list((tmp_path / "enhanced" / "dicom").iterdir())) == 1
    assert enhanced.get_data_dtype() == classic.get_data_dtype()
    assert (enhanced.dataobj.slope, enhanced.dataobj.inter) == (1.0, -1024.0)
    assert (classic.dataobj.slope, classic.dataobj.inter) == (1.0, -1024.0)
    np.testing.assert_array_equal(enhanced.dataobj.get_unscaled(), classic.dataobj.get_unscaled())
    np.testing.assert_allclose(enhanced.affine, classic.affine, rtol=0, atol=1e-5)
    assert e_json["VolumeTiming"] == c_json["VolumeTiming"] == [2.0 * k for k in range(12)]


def test_enhanced_and_classic_exports_give_the_same_perfusion_maps(dcm2niix, tmp_path):
    """The chain (convert → perfusion) on one simulated subject exported classic and
    enhanced: the converted series are identical, so every map is too (exactly: same input,
    deterministic computation)."""
    from bolus.io.nifti import load_volume, save_like
    from bolus.paths import SubjectPaths
    from bolus.simulate.cohort import simulate_subject
    from bolus.stages import convert_subject, perfusion_and_maps

    sim = simulate_subject(5, 1, "stroke", matrix=(32, 32, 4), n_timepoints=40)
    maps = {}
    for storage in ("classic", "enhanced"):
        folder = tmp_path / storage
        write_dsc_series(folder / "dicom", sim.signal, sim.phantom.grid, tr_s=sim.tr_s,
                         te_s=sim.te_s, exam=synthetic_exam(5, 1), vendor="ge", storage=storage)  # fmt: skip
        row = {"participant_id": "sub-01", "dicom_dir": str(folder / "dicom")}
        convert_subject(row, folder / "dsc.nii.gz", folder / "dsc.json")
        data, affine = load_volume(folder / "dsc.nii.gz")
        mean = data.mean(axis=-1)
        save_like(mean > 0.2 * mean.max(), affine, folder / "mask.nii.gz", dtype=np.uint8)
        subject = SubjectPaths.at_prefix(folder / "sub-01").with_input(
            mc_dsc=folder / "dsc.nii.gz", dsc_json=folder / "dsc.json",
            brain_mask=folder / "mask.nii.gz",
        )  # fmt: skip
        perfusion_and_maps(subject)
        maps[storage] = {p.name: load_volume(p)[0] for p in sorted(folder.glob("sub-01*.nii.gz"))}
    assert maps["classic"] and maps["classic"].keys() == maps["enhanced"].keys()
    for name, classic in maps["classic"].items():
        np.testing.assert_array_equal(maps["enhanced"][name], classic, err_msg=name)
