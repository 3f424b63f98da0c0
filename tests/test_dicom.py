"""Conversion: real vendor DICOM and the simulator's, checked against what dcm2niix must give."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bolus.io.dicom import convert_dicom_series, discover_series, select_series
from bolus.io.errors import SubjectError


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("series", "reference", "shape", "te", "tr"),
    [
        ("20180918GE", "DCM2NIIX_regression_test_4", (64, 64, 15, 10), 0.03, 5.0),
        ("20180918Si", "EPI_PE=AP_3", (72, 72, 5, 2), 0.05, 2.43537),
    ],
)
def test_real_vendor_dicom_converts_like_the_reference(
    dcm_qa, dcm2niix, tmp_path, series, reference, shape, te, tr
):
    """GE classic multi-file and Siemens mosaic series: same voxels, geometry and timing as the
    reference conversion shipped with the data."""
    before = _tree_digest(dcm_qa / "In" / series)
    sidecar = convert_dicom_series(
        dcm_qa / "In" / series, tmp_path / "dsc.nii.gz", tmp_path / "dsc.json", subject="sub-qa"
    )
    ours = nib.load(tmp_path / "dsc.nii.gz")
    ref = nib.load(dcm_qa / "Ref" / f"{reference}.nii")
    ref_json = json.loads((dcm_qa / "Ref" / f"{reference}.json").read_text())
    assert ours.shape == shape == ref.shape
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(ref.dataobj))
    assert sidecar["EchoTime"] == pytest.approx(te) == ref_json["EchoTime"]
    assert sidecar["RepetitionTime"] == pytest.approx(tr) == ref_json["RepetitionTime"]
    np.testing.assert_allclose(sidecar["SliceTiming"], ref_json["SliceTiming"], atol=1e-4)
    assert len(sidecar["VolumeTiming"]) == shape[3]
    assert _tree_digest(dcm_qa / "In" / series) == before, "the input DICOM must not change"


def test_converted_sidecar_holds_no_identifiers(dcm_qa, dcm2niix, tmp_path):
    """The Siemens export carries a patient name, birth date, station and institution: none survive."""
    convert_dicom_series(
        dcm_qa / "In" / "20180918Si", tmp_path / "d.nii.gz", tmp_path / "d.json", subject="sub-qa"
    )
    text = (tmp_path / "d.json").read_text()
    for leaked in ("Test^Regression", "19700101", "AWP45160", "FMRIF 3TD", "Bethesda"):
        assert leaked not in text
    assert "InstitutionName" not in text and "DeviceSerialNumber" not in text


def test_real_series_timing_comes_from_acquisition_times(dcm_qa):
    """Siemens volumes carry their own AcquisitionTime; GE classic files share one, so the
    nominal k·TR is used."""
    from bolus.io.dicom import volume_times

    si = discover_series(dcm_qa / "In" / "20180918Si")[0]
    assert si.mosaic and si.n_timepoints == 2
    assert volume_times(si, 2, 2.43537) == pytest.approx([0.0, 2.435], abs=1e-3)
    ge = discover_series(dcm_qa / "In" / "20180918GE")[0]
    assert ge.n_timepoints == 10 and ge.n_slices == 15
    assert volume_times(ge, 10, 5.0) == pytest.approx([5.0 * k for k in range(10)])


def test_simulated_subject_converts_to_the_dynamic_series(small_cohort, dcm2niix, tmp_path):
    """The simulator's folder holds a localizer too; the dynamic series is picked and converted
    with all its time points, TE and TR."""
    dicom_dir = small_cohort.parent / "sourcedata" / "sub-01" / "dicom"
    found = discover_series(dicom_dir, "sub-01")
    assert len(found) >= 2, "the simulated folder must hold another series besides the DSC"
    sidecar = convert_dicom_series(
        dicom_dir, tmp_path / "s.nii.gz", tmp_path / "s.json", subject="sub-01"
    )
    image = nib.load(tmp_path / "s.nii.gz")
    assert image.shape == (48, 48, 8, 40)
    assert sidecar["EchoTime"] == pytest.approx(0.03)
    assert sidecar["RepetitionTime"] == pytest.approx(1.5)
    np.testing.assert_allclose(np.diff(sidecar["VolumeTiming"]), 1.5, atol=0.01)


def test_folder_without_dynamic_series_names_subject_and_what_was_found(tmp_path):
    from bolus.simulate.cohort import write_localizer_series

    write_localizer_series(tmp_path / "dicom", seed=3)
    with pytest.raises(SubjectError) as caught:
        select_series(
            discover_series(tmp_path / "dicom", "sub-07"), "most_timepoints", "sub-07", tmp_path
        )
    message = str(caught.value)
    assert message.startswith("sub-07:")
    assert "no dynamic series" in message and "3 images" in message


def test_missing_folder_and_non_dicom_files(tmp_path):
    with pytest.raises(SubjectError, match="sub-02: .*does not exist"):
        discover_series(tmp_path / "nowhere", "sub-02")
    (tmp_path / "notes.txt").write_text("not an image")
    assert discover_series(tmp_path, "sub-02") == []


def test_series_rule_by_description(small_cohort):
    dicom_dir = small_cohort.parent / "sourcedata" / "sub-01" / "dicom"
    found = discover_series(dicom_dir, "sub-01")
    chosen = select_series(found, "most_timepoints", "sub-01", dicom_dir)
    assert chosen.n_timepoints == 40
    with pytest.raises(SubjectError, match="no dynamic series matches"):
        select_series(found, "no-such-series", "sub-01", dicom_dir)


def test_ct_perfusion_dicom_converts_without_echo_time(dcm2niix, tmp_path):
    """A CT perfusion series (CT Image Storage: HU + 1024 stored with RescaleIntercept −1024,
    no EchoTime, no RepetitionTime) converts with ``modality="ctp"``: the NIfTI holds the HU
    in the same world grid (within float32 rounding of the intercept, 0.02 HU), the frame
    interval comes from the AcquisitionTimes, and no identifier survives. As DSC it is refused,
    naming the missing EchoTime."""
    from bolus.io.nifti import load_volume, resample_to_grid
    from bolus.simulate.cohort import simulate_subject
    from bolus.simulate.ctp import ctp_series
    from bolus.simulate.dicom_writer import PHI_TAGS, synthetic_exam, write_ctp_series

    sim = simulate_subject(3, 1, "stroke", matrix=(24, 24, 4), n_timepoints=12, tr_s=2.0)
    hu = np.rint(ctp_series(sim, np.random.default_rng(0)))
    exam = synthetic_exam(3, 1)
    write_ctp_series(tmp_path / "dicom", hu, sim.phantom.grid, tr_s=2.0, exam=exam)
    out = tmp_path / "out"
    sidecar = convert_dicom_series(
        tmp_path / "dicom", out / "ct.nii.gz", out / "ct.json", subject="sub-01", modality="ctp"
    )
    assert sidecar["Modality"] == "CT" and "EchoTime" not in sidecar
    assert sidecar["RepetitionTime"] == 2.0
    assert sidecar["VolumeTiming"] == [2.0 * k for k in range(12)]
    data, affine = load_volume(out / "ct.nii.gz")
    on_grid = np.stack(
        [resample_to_grid(data[..., t], affine, hu.shape[:3], sim.phantom.grid.affine_ras, order=0)
         for t in range(12)], axis=-1,
    )  # fmt: skip
    np.testing.assert_allclose(on_grid, hu, atol=0.02)
    text = (out / "ct.json").read_text()
    assert not [k for k in PHI_TAGS if exam.identifiers[k] in text]
    with pytest.raises(SubjectError, match="sub-01.*EchoTime"):
        convert_dicom_series(tmp_path / "dicom", out / "x.nii.gz", out / "x.json", subject="sub-01")


def test_ct_frame_interval_from_acquisition_times_when_dcm2niix_gives_none():
    """A CT sidecar without RepetitionTime (dcm2niix writes none when it cannot derive one)
    gets the median interval of the volumes' AcquisitionTime (here 2 s, one 3 s gap); a
    series whose volumes share one AcquisitionTime is refused, naming subject and folder."""
    from bolus.io.dicom import SeriesInfo, _ct_frame_interval

    info = SeriesInfo(uid="1.2", number=2, description="CTP", modality="CT")
    info.acquisition_times = {k + 1: 36000.0 + t for k, t in enumerate([0, 2, 4, 7, 9, 11])}
    sidecar = _ct_frame_interval({"Modality": "CT"}, info, 6, "sub-01", "/data/sub-01")
    assert sidecar["RepetitionTime"] == 2.0
    info.acquisition_times = {k + 1: 36000.0 for k in range(6)}
    with pytest.raises(SubjectError, match="sub-01.*AcquisitionTime"):
        _ct_frame_interval({"Modality": "CT"}, info, 6, "sub-01", "/data/sub-01")


# ----------------------------------------------------------------- real exports vs dcm2niix alone
def _dcm2niix_alone(files, out: Path) -> Path:
    """dcm2niix on exactly ``files``, with the converter's options (and its second run with
    --ignore_trigger_times when the first splits the series): the reference conversion."""
    import subprocess

    from bolus.io.dicom import dcm2niix_executable

    staged = out / "in"
    staged.mkdir(parents=True)
    for i, path in enumerate(files):
        (staged / f"{i:06d}.dcm").symlink_to(Path(path).resolve())
    for extra in ([], ["--ignore_trigger_times"]):
        result = out / ("out" + "".join(extra))
        result.mkdir()
        cmd = [dcm2niix_executable(), "-z", "y", "-b", "y", "-ba", "y", "-f", "ref", *extra]
        subprocess.run([*cmd, "-o", str(result), str(staged)], capture_output=True, check=True)
        images = sorted(result.glob("*.nii.gz"))
        if len(images) == 1:
            return images[0]
    raise AssertionError(f"dcm2niix alone wrote {len(images)} images")


REAL_EXPORTS = [
    # (repository, folder, dicom.series): vendor and storage
    ("dcm_qa_nih", "In/20180918GE", "most_timepoints"),  # GE MR750, classic
    ("dcm_qa_nih", "In/20180918Si", "most_timepoints"),  # Siemens Skyra, classic mosaic
    ("dcm_qa_philips_enh", "In/cl", "1903"),  # Philips Achieva, classic, per-frame scaling
    ("dcm_qa_enh", "In/Siemens/XA10", "most_timepoints"),  # Siemens XA10, enhanced per volume
    ("dcm_qa_toshiba", "In/Galan/7006_DTI_ortho", "most_timepoints"),  # Canon/Toshiba Galan
]


@pytest.mark.parametrize(("repository", "folder", "rule"), REAL_EXPORTS)
def test_real_exports_convert_exactly_as_dcm2niix(
    dcm_qa, public_export, dcm2niix, tmp_path, repository, folder, rule
):
    """Every vendor's real export: the converted series is dcm2niix's own, byte for byte in
    its stored values, data type, scaling (slope, intercept) and affine (no tolerance: the
    file is dcm2niix's when the cross-check accepts it), and the inputs are untouched."""
    source = dcm_qa / folder if repository == "dcm_qa_nih" else public_export(repository, folder)
    before = _tree_digest(source)
    info = select_series(discover_series(source, "sub-qa"), rule, "sub-qa", source)
    sidecar = convert_dicom_series(
        source, tmp_path / "d.nii.gz", tmp_path / "d.json", subject="sub-qa", series_rule=rule
    )
    ours, ref = nib.load(tmp_path / "d.nii.gz"), nib.load(_dcm2niix_alone(info.files, tmp_path))
    assert ours.shape == ref.shape and ours.shape[3] == info.n_timepoints
    assert ours.get_data_dtype() == ref.get_data_dtype()
    assert (ours.dataobj.slope, ours.dataobj.inter) == (ref.dataobj.slope, ref.dataobj.inter)
    np.testing.assert_array_equal(ours.affine, ref.affine)
    np.testing.assert_array_equal(ours.dataobj.get_unscaled(), ref.dataobj.get_unscaled())
    assert sidecar["EchoTime"] > 0 and sidecar["RepetitionTime"] > 0
    assert _tree_digest(source) == before, "the input DICOM must not change"


def test_philips_enhanced_export_is_its_classic_export_in_time_order(
    public_export, dcm2niix, tmp_path, caplog
):
    """Philips enhanced (one file, 240 frames: 40 slices × 3 temporal positions × label/
    control) is read as a dynamic series, not '1 image'. dcm2niix stacks its volumes label
    by label (time going back at volume 4); the converter puts them in acquisition order,
    which is exactly dcm2niix's conversion of the same series exported classic: same stored
    values and scaling; affine within 1e-5 mm (float32 rounding of the two headers)."""
    import logging

    enhanced = public_export("dcm_qa_philips_enh", "In/enh")
    classic = public_export("dcm_qa_philips_enh", "In/cl")
    if not (enhanced / "1903_WIP_SOURCE_-_3DpCASL.dcm").exists():
        pytest.skip("In/enh not gunzipped")
    found = discover_series(enhanced, "sub-qa")
    chosen = select_series(found, "1903", "sub-qa", enhanced)
    assert chosen.enhanced and chosen.n_images == 240 and chosen.n_timepoints == 6
    assert "(enhanced, 1 file, 240 images, 6 time points)" in chosen.summary()
    with caplog.at_level(logging.WARNING, logger="bolus.io.dicom"):
        convert_dicom_series(enhanced, tmp_path / "e.nii.gz", tmp_path / "e.json",
                             subject="sub-qa", series_rule="1903")  # fmt: skip
    assert "acquisition order" in caplog.text
    info = select_series(discover_series(classic, "sub-qa"), "1903", "sub-qa", classic)
    ours, ref = nib.load(tmp_path / "e.nii.gz"), nib.load(_dcm2niix_alone(info.files, tmp_path))
    assert ours.get_data_dtype() == ref.get_data_dtype()
    assert (ours.dataobj.slope, ours.dataobj.inter) == (ref.dataobj.slope, ref.dataobj.inter)
    np.testing.assert_array_equal(ours.dataobj.get_unscaled(), ref.dataobj.get_unscaled())
    np.testing.assert_allclose(ours.affine, ref.affine, rtol=0, atol=1e-5)


def test_multi_echo_enhanced_export_is_refused_for_its_echo_times(public_export, tmp_path):
    """A Philips enhanced B0 field map (two echoes in one file) is refused, naming EchoTime,
    and nothing is written."""
    folder = public_export("dcm_qa_enh", "In/Philips")
    with pytest.raises(SubjectError, match=r"sub-qa: .*EchoTime is not the same"):
        convert_dicom_series(folder, tmp_path / "d.nii.gz", tmp_path / "d.json", subject="sub-qa")
    assert list(tmp_path.iterdir()) == []


def test_geometry_check_accepts_rounding_and_keeps_dcm2niix_output(dcm_qa, dcm2niix, tmp_path):
    """dcm2niix's affine moved by 0.013 mm (the largest difference seen on real GE and Philips
    data) is within a tenth of a voxel: the series is dcm2niix's own file, not a rebuild.
    Moved by half a slice, it is a different grid: rebuilt from the headers, in the
    headers' grid, with dcm2niix's data type and scaling."""
    from bolus.io.dicom import _verified_against_headers
    from bolus.io.nifti import save_raw

    info = discover_series(dcm_qa / "In" / "20180918GE")[0]
    ref = nib.load(_dcm2niix_alone(info.files, tmp_path))
    raw = np.asanyarray(ref.dataobj.get_unscaled())
    for shift_mm, rebuilt in ((0.013, False), (0.5 * ref.header.get_zooms()[2], True)):
        moved = ref.affine.copy()
        moved[:3, 3] += shift_mm / np.sqrt(3)
        path = save_raw(raw, ref.header, moved, tmp_path / f"moved{shift_mm}.nii.gz")
        work = tmp_path / f"work{shift_mm}"
        work.mkdir()
        result = _verified_against_headers(path, info, "sub-qa", work)
        assert (result != path) == rebuilt
        out = nib.load(result)
        assert out.get_data_dtype() == ref.get_data_dtype()
        np.testing.assert_array_equal(out.dataobj.get_unscaled(), raw)
        np.testing.assert_allclose(out.affine, ref.affine if rebuilt else moved, atol=2e-3)


def test_a_refused_series_leaves_no_output(dcm2niix, tmp_path):
    """A dynamic series without a bolus (an fMRI-like run: the same head with 1 % noise at
    every volume) converts, then the signal check refuses it for what it is, and neither
    the NIfTI nor the sidecar is left behind (nor a temporary)."""
    from bolus.simulate.cohort import simulate_subject
    from bolus.simulate.dicom_writer import synthetic_exam, write_dsc_series
    from bolus.stages import convert_subject

    sim = simulate_subject(7, 1, matrix=(16, 16, 3), n_timepoints=20)
    still = np.repeat(sim.signal[..., :1], 20, axis=-1)
    still *= 1 + 0.01 * np.random.default_rng(1).standard_normal(still.shape)
    write_dsc_series(tmp_path / "dicom", still, sim.phantom.grid, tr_s=sim.tr_s, te_s=sim.te_s,
                     exam=synthetic_exam(7, 1), vendor="ge")  # fmt: skip
    row = {"participant_id": "sub-07", "dicom_dir": str(tmp_path / "dicom")}
    out = tmp_path / "sub-07"
    with pytest.raises(SubjectError, match=r"sub-07: .*no bolus passage found: .*never drops"):
        convert_subject(row, out / "sub-07_dsc.nii.gz", out / "sub-07_dsc.json")
    assert list(out.iterdir()) == []
