"""Configuration and sample sheet: wrong input fails before any job runs, with its cause."""

from __future__ import annotations

import pytest

from bolus.config import PerfusionConstants, schema_defaults, validate_config
from bolus.participants import assign_split, read_participants, strata_columns


def test_defaults_come_from_the_schema():
    defaults = schema_defaults()
    assert defaults["svd"]["methods"] == ["ssvd", "csvd", "osvd"]
    assert defaults["output_dir"] == "results"
    constants = PerfusionConstants.from_config()
    assert (constants.density_g_ml, constants.hct_large, constants.hct_small) == (1.04, 0.45, 0.25)
    assert constants.kh == pytest.approx(0.55 / 0.75)


def test_user_values_override_defaults_without_losing_the_rest():
    config = validate_config({"participants": "p.tsv", "svd": {"methods": ["csvd"]}})
    assert config["svd"]["methods"] == ["csvd"]
    assert config["svd"]["ssvd_threshold"] == 0.2
    assert PerfusionConstants.from_config({"constants": {"density": 1.0}}).density_g_ml == 1.0


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"svd": {"methods": ["fft"]}}, "svd.methods"),
        ({"modality": "pet"}, "modality"),
        ({"constants": {"hct_large": 1.5}}, "constants.hct_large"),
        ({"unknown_key": 1}, "<top>"),
    ],
)
def test_invalid_config_names_the_key(bad, where):
    with pytest.raises(ValueError, match=where.replace(".", r"\.")):
        validate_config({"participants": "p.tsv", **bad})


def _write(path, text):
    path.write_text(text)
    return path


def test_participants_resolve_paths_and_assign_missing_splits(tmp_path):
    sheet = _write(
        tmp_path / "participants.tsv",
        "participant_id\tdicom_dir\tsplit\tgroup\n"
        "sub-01\traw/01\ttrain\tstroke\n"
        "sub-02\traw/02\t\thealthy\n",
    )
    table = read_participants(sheet, seed=5)
    assert table.loc["sub-01", "dicom_dir"] == str((tmp_path / "raw/01").resolve())
    assert table.loc["sub-01", "split"] == "train"
    assert table.loc["sub-02", "split"] == assign_split("sub-02", 5)
    assert strata_columns(table) == ["group"]


def test_split_assignment_is_reproducible_and_roughly_proportional():
    splits = [assign_split(f"sub-{i:03d}", 11) for i in range(1000)]
    assert splits == [assign_split(f"sub-{i:03d}", 11) for i in range(1000)]
    assert 0.55 < splits.count("train") / 1000 < 0.65


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("sub-01\traw\nsub-01\traw\n", "duplicated participant_id: sub-01"),
        ("01\traw\n", "does not match"),
        ("sub-01\t\n", "sub-01: needs dicom_dir or dsc_nifti"),
    ],
)
def test_bad_participant_rows_are_named(tmp_path, rows, message):
    sheet = _write(tmp_path / "participants.tsv", "participant_id\tdicom_dir\n" + rows)
    with pytest.raises(ValueError, match=message):
        read_participants(sheet)
