"""Study tables on hand-built cases: strata, the paired comparison, Holm, exclusions."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from bolus import paths
from bolus.evaluate.aggregate import (
    EXCLUDED_COLUMNS,
    PAIRED_COLUMNS,
    SUBJECT_COLUMNS,
    available_strata,
    excluded_subjects,
    holm,
    paired_table,
    read_subject_tables,
    study_table,
    write_study_tables,
    write_tsv,
)


def long_table(values: dict[str, list[float]], metric="nrmse", name="cbf", region="brain"):
    """{method: [value of sub-01, sub-02, …]} → a long subject table."""
    rows = [
        (f"sub-{i + 1:02d}", method, name, region, metric, v)
        for method, column in values.items()
        for i, v in enumerate(column)
    ]
    return pd.DataFrame.from_records(rows, columns=list(SUBJECT_COLUMNS))


def exact_wilcoxon_p(differences) -> float:
    """Two-sided exact p of the signed-rank test by enumerating every sign pattern
    (no ties, no zeros): P(W+ ≤ w or W+ ≥ n(n+1)/2 − w) with w = min(W+, W−)."""
    d = np.asarray(differences, float)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w_plus = ranks[d > 0].sum()
    total = ranks.sum()
    w = min(w_plus, total - w_plus)
    sums = [sum(c) for k in range(len(d) + 1) for c in itertools.combinations(ranks, k)]
    return min(1.0, 2 * np.mean(np.array(sums) <= w))


# ----------------------------------------------------------------------------- strata

PARTICIPANTS = pd.DataFrame(
    {
        "participant_id": ["sub-01", "sub-02", "sub-03", "sub-04", "sub-05"],
        "group": ["stroke", "stroke", "healthy", "healthy", None],
        "site": ["A", "B", "A", "B", "A"],
        "age": ["70", "61", "55", "48", "80"],
    }
)


def test_two_strata_give_one_block_each_after_the_whole_cohort():
    subjects = long_table({"ssvd": [1.0, 2.0, 3.0, 4.0, 5.0]})
    study = study_table(subjects, PARTICIPANTS, strata=["group", "site"])
    assert list(study.columns[:2]) == ["group", "site"]
    rows = study.set_index(["group", "site"])
    assert rows.loc[("all", "all"), "mean"] == 3.0 and rows.loc[("all", "all"), "n"] == 5
    assert rows.loc[("stroke", "all"), "mean"] == 1.5
    assert rows.loc[("healthy", "all"), "median"] == 3.5
    assert rows.loc[("all", "A"), "mean"] == pytest.approx(3.0)  # sub-01, 03, 05
    assert rows.loc[("all", "A"), "q1"] == pytest.approx(np.percentile([1, 3, 5], 25))
    assert rows.loc[("all", "B"), "sd"] == pytest.approx(np.std([2, 4], ddof=1))
    # sub-05 has no group: its own group, not silently dropped
    assert study["group"].isna().sum() == 1
    assert list(study["group"].fillna("n/a")) == ["all", "stroke", "healthy", "n/a", "all", "all"]


def test_configured_strata_missing_from_participants_are_skipped():
    assert available_strata(PARTICIPANTS, ["group", "site"]) == ["group", "site"]
    assert available_strata(PARTICIPANTS.drop(columns="site"), ["group", "site"]) == ["group"]
    assert available_strata(PARTICIPANTS, ["age", "scanner"]) == ["age"]
    assert available_strata(None, ["group"]) == []


# ----------------------------------------------------------------------------- paired


def test_paired_comparison_by_hand():
    """Six subjects; ssvd is worse than osvd in every one (differences 1…6: every sign
    positive, exact p = 2/2⁶), csvd alternates (differences +1 −2 +3 −4 +5 −6)."""
    base = np.array([0.10, 0.30, 0.20, 0.50, 0.40, 0.60])
    ssvd = base + np.array([1, 2, 3, 4, 5, 6]) / 100
    csvd = base + np.array([1, -2, 3, -4, 5, -6]) / 100
    paired = paired_table(long_table({"osvd": base, "ssvd": ssvd, "csvd": csvd}), "osvd")
    assert tuple(paired.columns) == PAIRED_COLUMNS
    rows = paired.set_index("method")
    assert set(rows.index) == {"ssvd", "csvd"} and (paired["baseline"] == "osvd").all()
    assert rows.loc["ssvd", "n_pairs"] == 6
    assert rows.loc["ssvd", "median_difference"] == pytest.approx(0.035)
    assert rows.loc["csvd", "median_difference"] == pytest.approx(
        np.median([1, -2, 3, -4, 5, -6]) / 100
    )
    assert rows.loc["ssvd", "median_method"] == pytest.approx(np.median(ssvd))
    assert rows.loc["ssvd", "median_baseline"] == pytest.approx(np.median(base))
    p_ssvd, p_csvd = 2 / 2**6, exact_wilcoxon_p([1, -2, 3, -4, 5, -6])
    assert rows.loc["ssvd", "p"] == pytest.approx(p_ssvd)
    assert rows.loc["csvd", "p"] == pytest.approx(p_csvd)
    assert rows.loc["ssvd", "statistic"] == 0.0  # min(W+, W−): no negative difference
    # Holm over the two methods: the smaller p doubled, the larger kept (if not smaller)
    assert rows.loc["ssvd", "p_holm"] == pytest.approx(2 * p_ssvd)
    assert rows.loc["csvd", "p_holm"] == pytest.approx(max(p_csvd, 2 * p_ssvd))


def test_pairs_are_the_subjects_where_both_values_are_finite():
    base = [1.0, 2.0, np.nan, 4.0, 5.0]
    other = [1.5, np.inf, 3.0, 4.5, np.nan]
    row = paired_table(long_table({"osvd": base, "ssvd": other}), "osvd").iloc[0]
    assert row["n_pairs"] == 2 and row["median_difference"] == pytest.approx(0.5)


def test_every_pair_equal_gives_p_1_and_no_pair_gives_nan():
    same = paired_table(long_table({"osvd": [1.0, 2.0, 3.0], "ssvd": [1.0, 2.0, 3.0]}), "osvd")
    assert same.iloc[0]["p"] == 1.0 and same.iloc[0]["median_difference"] == 0.0
    none = paired_table(long_table({"osvd": [1.0, np.nan], "ssvd": [np.nan, 2.0]}), "osvd")
    assert none.iloc[0]["n_pairs"] == 0 and np.isnan(none.iloc[0]["p"])


def test_large_cohorts_get_scipys_result_for_each_comparison():
    """Above 50 pairs the comparisons are tested in one batched scipy call; each p equals
    scipy's own call on that comparison's differences (zeros and NaN pairs included)."""
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(2)
    n = 80
    base = rng.normal(1.0, 0.2, n)
    methods = {
        "osvd": base,
        "ssvd": base + rng.normal(0.05, 0.1, n),
        "csvd": np.where(rng.random(n) < 0.2, base, base + rng.normal(-0.01, 0.1, n)),
        "stnet": np.where(rng.random(n) < 0.3, np.nan, base + rng.normal(0.0, 0.1, n)),
    }
    paired = paired_table(long_table(methods), "osvd").set_index("method")
    assert list(paired.index) == ["ssvd", "csvd", "stnet"]
    for method in ("ssvd", "csvd", "stnet"):
        d = methods[method] - base
        d = d[np.isfinite(d)]
        expected = wilcoxon(d)
        assert paired.loc[method, "n_pairs"] == d.size
        assert paired.loc[method, "p"] == pytest.approx(expected.pvalue, rel=1e-9)
        assert paired.loc[method, "statistic"] == pytest.approx(expected.statistic)


def test_holm_correction_by_hand():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 → 0.04, 0.06, 0.06 (monotone), 0.5; NaN kept
    adjusted = holm([0.03, 0.5, 0.01, np.nan, 0.02])
    np.testing.assert_allclose(adjusted, [0.06, 0.5, 0.04, np.nan, 0.06])
    assert holm([0.6, 0.7])[0] == 1.0  # capped at 1
    assert holm([]).size == 0


def test_holm_families_are_map_region_metric():
    """Two metrics: each family holds the two methods only (m = 2, not 4)."""
    base = np.arange(1.0, 7.0)
    frames = [
        long_table({"osvd": base, "ssvd": base + 1, "csvd": base + 2}, metric=m)
        for m in ("nrmse", "mae")
    ]
    paired = paired_table(pd.concat(frames), "osvd")
    assert len(paired) == 4
    np.testing.assert_allclose(paired["p_holm"], 2 * paired["p"])


def test_a_baseline_that_is_not_a_method_gives_an_empty_table():
    paired = paired_table(long_table({"ssvd": [1.0, 2.0]}), "osvd")
    assert paired.empty and tuple(paired.columns) == PAIRED_COLUMNS


def test_models_with_fewer_maps_are_compared_on_the_maps_they_have():
    tables = [
        long_table({"osvd": [1.0, 2.0, 3.0], "talebi": [1.1, 2.2, 3.3]}, name="cbf"),
        long_table({"osvd": [1.0, 2.0, 3.0]}, name="tmax"),
    ]
    paired = paired_table(pd.concat(tables), "osvd")
    assert list(paired["map"]) == ["cbf"] and list(paired["method"]) == ["talebi"]


# ----------------------------------------------------------------------------- exclusions


def test_excluded_subjects_carry_the_reason_of_the_stage_that_failed():
    qc = pd.DataFrame(
        [
            ("sub-01", "metrics", "ok", ""),
            ("sub-02", "inspect", "failed", "sub-02: no dynamic series (found: localizer)"),
            ("sub-03", "inspect", "ok", ""),  # one row per stage (issue 6 layout)
            ("sub-03", "convert", "failed", "sub-03: dcm2niix: 3 of 40 volumes"),
            ("sub-03", "perfusion", "skipped", "an earlier stage failed"),
            ("sub-04", "metrics", "ok", ""),  # ok, but its table never arrived
        ],
        columns=list(EXCLUDED_COLUMNS),
    )
    excluded = excluded_subjects(qc, included=["sub-01"])
    assert tuple(excluded.columns) == EXCLUDED_COLUMNS
    rows = excluded.set_index("participant_id")
    assert list(rows.index) == ["sub-02", "sub-03", "sub-04"]
    assert rows.loc["sub-02", "reason"].startswith("sub-02: no dynamic series")
    assert tuple(rows.loc["sub-03", ["stage", "status"]]) == ("convert", "failed")
    assert tuple(rows.loc["sub-04", ["status", "reason"]]) == ("missing", "no metrics")


# ----------------------------------------------------------------------------- files


def test_study_files_hold_the_paired_table_and_the_exclusions(tmp_path):
    tables = []
    for i, (a, b) in enumerate([(0.1, 0.2), (0.2, 0.25), (0.3, 0.5)], start=1):
        path = tmp_path / f"sub-{i:02d}_metrics.tsv"
        write_tsv(
            long_table({"osvd": [a], "ssvd": [b]}).assign(participant_id=f"sub-{i:02d}"), path
        )
        tables.append(path)
    qc = tmp_path / "qc.tsv"
    qc.write_text(
        "participant_id\tstage\tstatus\treason\n"
        "sub-01\tmetrics\tok\t\nsub-02\tmetrics\tok\t\nsub-03\tmetrics\tok\t\n"
        "sub-04\tinspect\tfailed\tsub-04: no dynamic series\n"
    )
    participants = PARTICIPANTS.iloc[:4]
    out = tmp_path / "results"
    written = write_study_tables(tables, out, participants, strata=["site"], baseline="osvd", qc=qc)
    paired = pd.read_csv(written["paired"], sep="\t")
    assert written["paired"] == paths.paired_table(out)
    assert paired.iloc[0]["method"] == "ssvd" and paired.iloc[0]["n_pairs"] == 3
    assert paired.iloc[0]["median_difference"] == pytest.approx(0.1)
    text = written["markdown"].read_text()
    assert "## Excluded subjects" in text and "sub-04: no dynamic series" in text
    assert "## Paired comparison with osvd" in text
    assert "| method | region | metric | n_pairs |" in text
    assert "Subjects: 3." in text


def test_reading_subject_tables_keeps_every_row_and_value(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for i in range(1, 6):
        frame = long_table({"osvd": [rng.random()], "ssvd": [np.nan]})
        frame["participant_id"] = f"sub-{i:02d}"
        frames.append(frame)
        write_tsv(frame, tmp_path / f"sub-{i:02d}.tsv")
    read = read_subject_tables(sorted(tmp_path.glob("sub-*.tsv")))
    expected = pd.concat(frames, ignore_index=True)
    assert list(read.columns) == list(SUBJECT_COLUMNS)
    assert list(read["participant_id"].astype(str)) == list(expected["participant_id"])
    np.testing.assert_allclose(read["value"], expected["value"], rtol=1e-5)
    with pytest.raises(ValueError, match="lacks the columns"):
        (tmp_path / "bad.tsv").write_text("participant_id\tvalue\nsub-01\t1\n")
        read_subject_tables([tmp_path / "bad.tsv"])
