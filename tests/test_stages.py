"""The file layer: user NIfTI input, inspection records, metrics against a named method."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bolus import paths
from bolus.io.errors import SubjectError
from bolus.io.nifti import save_like
from bolus.stages import (
    convert_subject,
    inspect_subject,
    read_inspection,
    subject_metrics_table,
)


def test_user_nifti_input_is_checked_and_deidentified(tmp_path):
    # a baseline of 6 frames, then a 40 % bolus dip (the signal checks want a pre-bolus baseline)
    dip = 1 - 0.4 * np.exp(-((np.arange(12) - 8.0) ** 2) / 2) * (np.arange(12) >= 6)
    noise = np.random.default_rng(0).normal(0, 2, (6, 6, 3, 12))
    series = (500 * dip + noise).astype(np.float32)
    save_like(series, np.eye(4), tmp_path / "in" / "dsc.nii.gz")
    sidecar = {"EchoTime": 0.03, "RepetitionTime": 1.5, "InstitutionName": "Somewhere Hospital",
               "PatientBirthDate": "19500101"}  # fmt: skip
    (tmp_path / "in" / "dsc.json").write_text(json.dumps(sidecar))
    row = {"participant_id": "sub-09", "dsc_nifti": str(tmp_path / "in" / "dsc.nii.gz")}
    assert inspect_subject(row, tmp_path / "inspect.json")["status"] == "ok"
    out = convert_subject(row, tmp_path / "out.nii.gz", tmp_path / "out.json")
    assert out["VolumeTiming"] == pytest.approx([1.5 * k for k in range(12)])
    text = (tmp_path / "out.json").read_text()
    assert "Somewhere" not in text and "19500101" not in text


def test_user_nifti_without_sidecar_or_time_axis_is_refused(tmp_path):
    save_like(np.zeros((4, 4, 4), np.float32), np.eye(4), tmp_path / "flat.nii.gz")
    row = {"participant_id": "sub-10", "dsc_nifti": str(tmp_path / "flat.nii.gz")}
    with pytest.raises(SubjectError, match="sub-10: .*no JSON sidecar"):
        convert_subject(row, tmp_path / "o.nii.gz", tmp_path / "o.json")
    (tmp_path / "flat.json").write_text(json.dumps({"EchoTime": 0.03, "RepetitionTime": 1.5}))
    with pytest.raises(SubjectError, match="not a 4D series"):
        convert_subject(row, tmp_path / "o.nii.gz", tmp_path / "o.json")


def test_inspection_records_a_missing_folder_without_raising(tmp_path):
    row = {"participant_id": "sub-11", "dicom_dir": str(tmp_path / "absent")}
    record = inspect_subject(row, tmp_path / "qc" / "sub-11_inspect.json")
    assert record["status"] == "failed" and "sub-11" in record["reason"]
    assert read_inspection(tmp_path / "qc" / "sub-11_inspect.json") == record


@pytest.fixture
def two_methods(tmp_path):
    """Maps of 'ssvd' and 'osvd' for one subject; osvd is 10 % above ssvd everywhere."""
    rng = np.random.default_rng(1)
    prefix = tmp_path / "sub-01" / "perf" / "sub-01"
    affine = np.diag([3.0, 3.0, 5.0, 1.0])
    for name in paths.MAPS:
        base = rng.uniform(1, 10, (10, 10, 6)).astype(np.float32)
        save_like(base, affine, paths.map_prefix(prefix, "ssvd", name))
        save_like(1.1 * base, affine, paths.map_prefix(prefix, "osvd", name))
    mask = np.zeros((10, 10, 6), np.uint8)
    mask[2:8, 2:8, 1:5] = 1
    save_like(mask, affine, tmp_path / "mask.nii.gz", dtype=np.uint8)
    return prefix, tmp_path


def _subject(prefix, tmp) -> paths.SubjectPaths:
    return paths.SubjectPaths.at_prefix(prefix).with_input(brain_mask=tmp / "mask.nii.gz")


def test_metrics_against_a_named_method(two_methods):
    prefix, tmp = two_methods
    subject = _subject(prefix, tmp)
    table = subject_metrics_table(subject, ["ssvd", "osvd"], reference="ssvd")
    assert set(table["method"]) == {"osvd"}, "the reference is not compared with itself"
    nrmse = table.query("map == 'cbf' and metric == 'nrmse' and region == 'brain'")["value"]
    assert nrmse.iloc[0] == pytest.approx(0.1, rel=1e-4)
    assert pd.read_csv(subject.metrics_tsv, sep="\t").shape[0] == len(table)


def test_metrics_need_reference_maps(two_methods, tmp_path):
    prefix, tmp = two_methods
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubjectError, match="sub-01: .*no reference maps"):
        subject_metrics_table(_subject(prefix, tmp), ["ssvd"], reference_dir=tmp_path / "empty")


def test_comparison_is_restricted_to_where_the_reference_is_defined(two_methods, tmp_path):
    """A reference that is NaN outside tissue (CSF, vessels): what a method writes there is
    not scored, so garbage in those voxels leaves the metrics untouched."""
    prefix, tmp = two_methods
    ref_dir = tmp_path / "reference"
    affine = np.diag([3.0, 3.0, 5.0, 1.0])
    undefined = np.zeros((10, 10, 6), bool)
    undefined[2:4, 2:8, 1:5] = True  # a third of the mask
    for name in paths.MAPS:
        truth = nib.load(paths.map_prefix(prefix, "ssvd", name)).get_fdata().astype(np.float32)
        save_like(np.where(undefined, np.nan, truth), affine, ref_dir / f"{name}.nii.gz")
        garbage = truth.copy()
        garbage[undefined] = 1e6
        save_like(garbage, affine, paths.map_prefix(prefix, "ssvd", name))
    table = subject_metrics_table(_subject(prefix, tmp), ["ssvd"], reference_dir=ref_dir)
    brain = table.query("region == 'brain' and metric in ['mae', 'nrmse']")
    assert np.allclose(brain["value"], 0.0, atol=1e-5)
    # the garbage Tmax (1e6 s > 6 s) there must not count as a hypoperfusion lesion
    tmax = table.query("map == 'tmax' and region == 'brain'").set_index("metric")["value"]
    assert tmax["volume_pred_ml"] == pytest.approx(tmax["volume_ref_ml"])
    assert tmax["dice"] == pytest.approx(1.0)


def test_qc_table_reports_the_stage_each_subject_reached(tmp_path):
    from bolus.qc import qc_table, write_verdict

    for pid, status in (("sub-01", "ok"), ("sub-02", "ok"), ("sub-03", "failed")):
        write_verdict(paths.verdict(tmp_path, pid, "inspect"), pid, "inspect", status,
                      f"{pid}: bad" if status == "failed" else "")  # fmt: skip
    for stage in paths.STAGES[1:]:
        write_verdict(paths.verdict(tmp_path, "sub-01", stage), "sub-01", stage, "ok")
    qc = qc_table(tmp_path, ["sub-01", "sub-02", "sub-03", "sub-04"])
    last = qc.groupby("participant_id").tail(1).set_index("participant_id")
    assert last["status"].to_dict() == {
        "sub-01": "ok", "sub-02": "missing", "sub-03": "failed", "sub-04": "missing"
    }  # fmt: skip
    assert last.loc["sub-02", "stage"] == "convert"
    assert last.loc["sub-03", "reason"] == "sub-03: bad"


def test_preprocessed_series_keep_the_repetition_time(tmp_path):
    from bolus.simulate.cohort import simulate_subject
    from bolus.stages import preprocess_subject

    sim = simulate_subject(2, 1, "healthy", matrix=(32, 32, 6), n_timepoints=8)
    image = nib.Nifti1Image(sim.signal.astype(np.float32), sim.phantom.grid.affine_ras)
    image.header.set_zooms(image.header.get_zooms()[:3] + (1.5,))
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, tmp_path / "dsc.nii.gz")
    out = paths.SubjectPaths(tmp_path / "out", "sub-01").with_input(dsc=tmp_path / "dsc.nii.gz")
    preprocess_subject(out, {"enabled": False})
    assert nib.load(out.mc_dsc).header.get_zooms()[3] == pytest.approx(1.5)
    motion = pd.read_csv(out.motion_tsv, sep="\t")
    assert motion.shape == (8, 9) and (motion["fd_above_threshold"] == 0).all()
    assert nib.load(out.brain_mask).get_fdata().sum() > 0
