"""With learned models, the study tables score every method on the held-out test subjects:
a model is never scored on the subjects it was trained on unless the user asks for it."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from bolus import paths
from bolus.config import validate_config
from bolus.evaluate.aggregate import (
    SPLIT,
    SUBJECT_COLUMNS,
    read_subject_tables,
    study_scope,
    write_study_tables,
    write_tsv,
)

SPLITS = {
    "sub-01": "train",
    "sub-02": "train",
    "sub-03": "val",
    "sub-04": "test",
    "sub-05": "test",
}
#: a model that has memorised its training subjects (NRMSE 0.01) and generalises poorly
#: (0.5, 0.7); oSVD is the same everywhere but subject-dependent (0.3 + 0.01 · number)
MODEL_NRMSE = {"sub-01": 0.01, "sub-02": 0.01, "sub-03": 0.02, "sub-04": 0.5, "sub-05": 0.7}


def osvd_nrmse(pid: str) -> float:
    return 0.3 + 0.01 * int(pid[-2:])


def subject_rows(pid: str) -> pd.DataFrame:
    rows = [
        (pid, "osvd", "cbf", "brain", "nrmse", osvd_nrmse(pid)),
        (pid, "mlp", "cbf", "brain", "nrmse", MODEL_NRMSE[pid]),
    ]
    return pd.DataFrame.from_records(rows, columns=list(SUBJECT_COLUMNS))


def participants(splits=SPLITS) -> pd.DataFrame:
    return pd.DataFrame({"participant_id": list(splits), "split": list(splits.values())})


@pytest.fixture
def subject_files(tmp_path):
    files = []
    for pid in SPLITS:
        files.append(write_tsv(subject_rows(pid), tmp_path / "in" / f"{pid}_metrics.tsv"))
    return files


def read(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)


def median_of(study: pd.DataFrame, method: str) -> tuple[int, float]:
    row = study[study["method"] == method].iloc[0]
    return int(row["n"]), float(row["median"])


def test_models_are_scored_on_the_test_subjects_only_and_svd_on_the_same(tmp_path, subject_files):
    out = tmp_path / "results"
    written = write_study_tables(subject_files, out, participants=participants(), models=["mlp"])
    subjects = read(written["subjects"])
    # subjects.tsv keeps every subject's rows, with its split as the last column
    assert list(subjects.columns) == [*SUBJECT_COLUMNS, SPLIT]
    assert len(subjects) == 2 * len(SPLITS)
    assert dict(zip(subjects["participant_id"], subjects[SPLIT], strict=True)) == SPLITS
    # ... byte for byte the subject files' rows, each with its split appended
    expected = [
        line + "\t" + SPLITS[line.split("\t")[0]]
        for f in subject_files
        for line in f.read_text().splitlines()[1:]
    ]
    assert written["subjects"].read_text().splitlines()[1:] == expected

    study = read(written["study"])
    # the test subjects sub-04 and sub-05 only: not the 0.01 of the memorised subjects
    assert median_of(study, "mlp") == (2, pytest.approx(0.6))
    assert median_of(study, "osvd") == (2, pytest.approx((osvd_nrmse("sub-04") + 0.35) / 2))
    paired = read(written["paired"])
    assert paired["n_pairs"].tolist() == [2]
    assert paired["median_difference"].iloc[0] == pytest.approx(np.median([0.5 - 0.34, 0.7 - 0.35]))
    markdown = written["markdown"].read_text()
    assert "the 2 held-out `test` subjects (of 5 completed)" in markdown
    assert "Subjects: 5." not in markdown


def test_study_subjects_all_scores_every_subject_and_says_it_flatters_the_models(
    tmp_path, subject_files
):
    out = tmp_path / "results"
    written = write_study_tables(
        subject_files, out, participants=participants(), models=["mlp"], scope="all"
    )
    study = read(written["study"])
    assert median_of(study, "mlp") == (5, pytest.approx(0.02))
    assert read(written["paired"])["n_pairs"].tolist() == [5]
    markdown = written["markdown"].read_text()
    assert "`study.subjects: all`" in markdown and "flatters them" in markdown


def test_without_models_nothing_is_held_out_and_every_subject_counts(tmp_path, subject_files):
    out = tmp_path / "results"
    written = write_study_tables(subject_files, out, participants=participants())
    study = read(written["study"])
    assert median_of(study, "osvd")[0] == 5
    assert read(written["subjects"])[SPLIT].notna().all()  # the split column is still there
    assert "Subjects: 5." in written["markdown"].read_text()


def test_a_cohort_without_test_subjects_gets_a_warning_not_a_silent_empty_table(
    tmp_path, subject_files, caplog
):
    no_test = dict.fromkeys(SPLITS, "train") | {"sub-03": "val"}
    out = tmp_path / "results"
    with caplog.at_level(logging.WARNING):
        written = write_study_tables(
            subject_files, out, participants=participants(no_test), models=["mlp"]
        )
    assert read(written["study"]).empty
    assert read(written["paired"]).empty
    assert len(read(written["subjects"])) == 2 * len(SPLITS)  # every subject's metrics kept
    markdown = written["markdown"].read_text()
    assert "**Warning: no test subjects.** None of the 5 completed subjects" in markdown
    assert "study.subjects: all" in markdown
    assert "No metrics were computed" not in markdown
    assert any("no test subjects" in r.getMessage() for r in caplog.records)


def test_the_default_scope_is_test_and_other_values_are_rejected():
    config = validate_config({"participants": "p.tsv"})
    assert config["study"]["subjects"] == "test"
    assert validate_config({"participants": "p.tsv", "study": {"subjects": "all"}})
    with pytest.raises(ValueError, match="study.subjects"):
        validate_config({"participants": "p.tsv", "study": {"subjects": "val"}})


def test_a_table_without_splits_cannot_be_scored_on_test_subjects():
    table = subject_rows("sub-04")
    with pytest.raises(ValueError, match="no split column"):
        study_scope(table, models=["mlp"], scope="test")
    assert study_scope(table, models=[], scope="test").split is None


def test_splits_reach_multi_subject_and_non_standard_files(tmp_path):
    both = pd.concat([subject_rows("sub-01"), subject_rows("sub-04")])
    standard = write_tsv(both, tmp_path / "both.tsv")
    reordered = tmp_path / "reordered.tsv"  # columns in another order: the checked slow path
    subject_rows("sub-05")[list(reversed(SUBJECT_COLUMNS))].to_csv(reordered, sep="\t", index=False)
    copy = tmp_path / "subjects.tsv"
    table = read_subject_tables([standard, reordered], copy_to=copy, splits=SPLITS)
    assert list(table.columns) == [*SUBJECT_COLUMNS, SPLIT]
    assert table.groupby("participant_id", observed=True)[SPLIT].first().astype(str).to_dict() == {
        "sub-01": "train",
        "sub-04": "test",
        "sub-05": "test",
    }
    again = read_subject_tables([copy])  # subjects.tsv itself, split column and all
    pd.testing.assert_frame_equal(
        again.astype(str).reset_index(drop=True), table.astype(str).reset_index(drop=True)
    )
    # a subject absent from the splits reads n/a
    alone = read_subject_tables([standard], splits={"sub-01": "train"})
    assert alone[alone["participant_id"] == "sub-04"][SPLIT].isna().all()


def test_study_figures_and_report_tables_use_the_same_subjects(
    tmp_path, subject_files, monkeypatch
):
    from bolus.evaluate import figures, report

    out = tmp_path / "results"
    written = write_study_tables(subject_files, out, participants=participants(), models=["mlp"])
    drawn = {}
    monkeypatch.setattr(figures, "study_figures", lambda table, _: drawn.setdefault("t", table))
    report.study_figures(written["subjects"], out, models=["mlp"])
    assert set(drawn["t"]["participant_id"].astype(str)) == {"sub-04", "sub-05"}
    drawn.clear()
    report.study_figures(written["subjects"], out, models=["mlp"], scope="all")
    assert set(drawn["t"]["participant_id"].astype(str)) == set(SPLITS)

    pages = [tmp_path / f"{n}.html" for n in ("study", "paired", "excluded")]
    report.report_tables(
        written["study"], written["paired"], None, written["subjects"], *pages, models=["mlp"]
    )
    assert "held-out test subjects" in pages[0].read_text()
    assert "held-out test subjects" in pages[1].read_text()
    assert paths.study_markdown(out) == written["markdown"]
