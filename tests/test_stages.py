"""The file layer: user NIfTI input, inspection records, metrics against a named method."""

from __future__ import annotations

import json

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
    series = np.random.default_rng(0).random((6, 6, 3, 12)).astype(np.float32)
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


def test_metrics_against_a_named_method(two_methods):
    prefix, tmp = two_methods
    table = subject_metrics_table(
        "sub-01", prefix, ["ssvd", "osvd"], tmp / "mask.nii.gz", tmp / "m.tsv",
        config={"participants": "", "reference": "ssvd"},
    )  # fmt: skip
    assert set(table["method"]) == {"osvd"}, "the reference is not compared with itself"
    nrmse = table.query("map == 'cbf' and metric == 'nrmse' and region == 'brain'")["value"]
    assert nrmse.iloc[0] == pytest.approx(0.1, rel=1e-4)
    assert pd.read_csv(tmp / "m.tsv", sep="\t").shape[0] == len(table)


def test_metrics_need_reference_maps(two_methods, tmp_path):
    prefix, tmp = two_methods
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubjectError, match="sub-01: .*no reference maps"):
        subject_metrics_table(
            "sub-01", prefix, ["ssvd"], tmp / "mask.nii.gz", tmp / "m.tsv",
            reference_dir=tmp_path / "empty", config={"participants": ""},
        )  # fmt: skip
