"""Evaluation: map agreement, hypoperfusion lesions, subject and study tables."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from bolus import paths
from bolus.config import schema_defaults
from bolus.evaluate.aggregate import (
    LESION_METRICS,
    REGION_METRICS,
    STUDY_COLUMNS,
    SUBJECT_COLUMNS,
    read_subject_tables,
    study_table,
    subject_metrics,
    write_study_tables,
    write_tsv,
)
from bolus.evaluate.lesions import dice, hd95, hypoperfusion_mask, iou, lesion_metrics, volume_ml
from bolus.evaluate.metrics import (
    finite_fraction,
    mae,
    map_metrics,
    nrmse,
    pcc,
    psnr,
    ssim,
    ssim_window,
)

SHAPE = (24, 24, 12)
SPACING = (2.0, 2.0, 4.0)
THRESHOLD = schema_defaults()["lesion"]["tmax_threshold_s"]


def brain_mask(shape=SHAPE):
    """An ellipsoidal 'brain' filling most of the volume."""
    c = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*c, indexing="ij")
    return x**2 + y**2 + z**2 < 0.9


def cbf_map(seed=0, shape=SHAPE):
    """A smooth positive CBF-like map (ml/100 g/min) with some texture."""
    rng = np.random.default_rng(seed)
    i, j, k = np.indices(shape, dtype=float)
    return 50 + 15 * np.sin(i / 3) * np.cos(j / 4) + 5 * k / shape[2] + rng.normal(0, 2, shape)


def tmax_map(lesion_slices=None, shape=SHAPE):
    """Tmax of 2 s everywhere, 9 s inside the lesion box."""
    tmax = np.full(shape, 2.0)
    if lesion_slices is not None:
        tmax[lesion_slices] = 9.0
    return tmax


LESION = (slice(6, 12), slice(8, 14), slice(4, 8))


def reference_maps(seed=0):
    cbf = cbf_map(seed)
    cbv = cbf * 0.08
    return {"cbf": cbf, "cbv": cbv, "mtt": 60 * cbv / cbf, "tmax": tmax_map(LESION), "ttp": cbf / 5}


# ----------------------------------------------------------------------------- map metrics


def test_metric_names_are_the_seven_of_the_issue():
    ref, mask = cbf_map(), brain_mask()
    assert " ".join(map_metrics(ref * 1.1, ref, mask)) == "mae rmse nrmse ssim psnr pcc scc"


def test_identical_maps_give_zero_error_ssim_one_and_infinite_psnr():
    ref, mask = cbf_map(), brain_mask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = map_metrics(ref.copy(), ref, mask)
    assert m["mae"] == 0 and m["rmse"] == 0 and m["nrmse"] == 0
    assert m["ssim"] == 1.0
    assert m["psnr"] == np.inf
    assert m["pcc"] == pytest.approx(1.0)
    assert m["scc"] == pytest.approx(1.0)


def test_a_10_percent_uniform_overestimate_gives_nrmse_0_1_and_mae_a_tenth_of_the_mean():
    ref, mask = cbf_map(), brain_mask()
    m = map_metrics(1.1 * ref, ref, mask)
    assert m["nrmse"] == pytest.approx(0.1)
    assert m["mae"] == pytest.approx(0.1 * ref[mask].mean())
    assert m["rmse"] == pytest.approx(0.1 * np.sqrt(np.mean(ref[mask] ** 2)))
    assert m["pcc"] == pytest.approx(1.0)  # a scale error is perfectly correlated
    assert 0 < m["ssim"] < 1


def test_psnr_is_range_squared_over_mse_in_the_mask_box():
    ref, mask = cbf_map(), brain_mask()
    pred = ref + 1.0 * mask  # error 1 inside the mask, 0 elsewhere in the box
    box_voxels = np.prod([np.ptp(np.nonzero(mask)[a]) + 1 for a in range(3)])
    mse = mask.sum() / box_voxels
    data_range = np.ptp(ref[mask])
    assert psnr(pred, ref, mask) == pytest.approx(10 * np.log10(data_range**2 / mse))


def test_more_noise_means_lower_ssim_and_psnr_and_correlation():
    ref, mask = cbf_map(), brain_mask()
    rng = np.random.default_rng(1)
    mild, strong = (ref + rng.normal(0, s, SHAPE) for s in (1.0, 10.0))
    assert ssim(mild, ref, mask) > ssim(strong, ref, mask)
    assert psnr(mild, ref, mask) > psnr(strong, ref, mask)
    assert pcc(mild, ref, mask) > pcc(strong, ref, mask)


def test_voxels_outside_the_mask_do_not_count():
    ref, mask = cbf_map(), brain_mask()
    pred = ref.copy()
    pred[~mask] = 1e6
    m = map_metrics(pred, ref, mask)
    assert m["mae"] == 0 and m["ssim"] == 1.0 and m["psnr"] == np.inf


def test_ssim_window_fits_small_boxes():
    assert ssim_window((20, 20, 12)) == 7  # a 12-slice volume takes skimage's default
    assert ssim_window((20, 20, 6)) == 5
    assert ssim_window((20, 20, 3)) == 3
    assert ssim_window((20, 20, 2)) is None
    # a 2-slice and a 1-slice mask still get an SSIM (2D per slice)
    ref = cbf_map()
    for slices in (slice(5, 7), slice(5, 6)):
        mask = np.zeros(SHAPE, bool)
        mask[4:20, 4:20, slices] = True
        assert ssim(ref, ref * 1.05, mask) == pytest.approx(ssim(ref, ref * 1.05, mask))
        assert 0 < ssim(ref * 1.05, ref, mask) < 1


def test_nan_in_a_failed_prediction_does_not_crash_and_uses_finite_voxels():
    ref, mask = cbf_map(), brain_mask()
    pred = 1.1 * ref
    pred[:12] = np.nan
    pred[0, 0, 0] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = map_metrics(pred, ref, mask)
    assert all(np.isfinite(v) for v in m.values())
    assert m["nrmse"] == pytest.approx(0.1)  # still a 10 % overestimate where it is finite
    valid = mask & np.isfinite(pred)
    assert finite_fraction(pred, ref, mask) == pytest.approx(valid.sum() / mask.sum())


def test_an_all_nan_prediction_gives_nan_metrics():
    ref, mask = cbf_map(), brain_mask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = map_metrics(np.full(SHAPE, np.nan), ref, mask)
    assert all(np.isnan(v) for v in m.values())
    assert finite_fraction(np.full(SHAPE, np.nan), ref, mask) == 0.0


def test_degenerate_references_give_nan_not_errors():
    mask = brain_mask()
    flat = np.full(SHAPE, 3.0)
    zero = np.zeros(SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(pcc(cbf_map(), flat, mask))
        assert np.isnan(nrmse(cbf_map(), zero, mask))
        assert np.isnan(psnr(cbf_map(), flat, mask))
        assert np.isnan(mae(cbf_map(), flat, np.zeros(SHAPE, bool)))


def test_shape_mismatch_says_to_resample():
    with pytest.raises(ValueError, match="resample"):
        map_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), np.ones((4, 4, 4), bool))


# ----------------------------------------------------------------------------- lesions


def test_tmax_above_6_s_marks_the_lesion_inside_the_brain():
    brain = brain_mask()
    tmax = tmax_map(LESION)
    tmax[0, 0, 0] = 20.0  # outside the brain: not a lesion
    tmax[12, 12, 6] = np.nan
    lesion = hypoperfusion_mask(tmax, brain, THRESHOLD)
    expected = np.zeros(SHAPE, bool)
    expected[LESION] = True
    np.testing.assert_array_equal(lesion, expected & brain)
    # the threshold defaults to the config schema's (6 s) and is strict
    np.testing.assert_array_equal(hypoperfusion_mask(tmax, brain), lesion)
    assert not hypoperfusion_mask(np.full(SHAPE, 6.0), brain).any()


def test_dice_of_identical_lesions_is_1_and_of_disjoint_ones_0():
    a = np.zeros(SHAPE, bool)
    a[2:6, 2:6, 2:6] = True
    b = np.zeros(SHAPE, bool)
    b[10:14, 10:14, 2:6] = True
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, b) == 0.0 and iou(a, b) == 0.0
    half = np.zeros(SHAPE, bool)
    half[2:6, 2:4, 2:6] = True  # half of a
    assert dice(a, half) == pytest.approx(2 * 32 / (64 + 32))
    assert iou(a, half) == pytest.approx(0.5)


def test_empty_lesions_agree_and_one_empty_lesion_disagrees():
    empty = np.zeros(SHAPE, bool)
    some = np.zeros(SHAPE, bool)
    some[3:5, 3:5, 3:5] = True
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, some) == 0.0 and iou(some, empty) == 0.0
    assert np.isnan(hd95(empty, empty, SPACING)) and np.isnan(hd95(some, empty, SPACING))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hd95_of_a_one_voxel_shift_is_the_voxel_size(axis):
    a = np.zeros(SHAPE, bool)
    a[6:14, 6:14, 3:9] = True
    b = np.roll(a, 1, axis=axis)
    assert hd95(a, a, SPACING) == 0.0
    assert hd95(a, b, SPACING) == pytest.approx(SPACING[axis])


def test_hd95_measures_the_distance_between_separate_lesions():
    a = np.zeros(SHAPE, bool)
    a[4, 4, 4] = True
    b = np.zeros(SHAPE, bool)
    b[4, 10, 4] = True
    assert hd95(a, b, SPACING) == pytest.approx(6 * SPACING[1])


def test_lesion_metrics_report_overlap_and_volumes_in_ml():
    brain = brain_mask()
    ref = tmax_map(LESION)
    shifted = tmax_map((slice(7, 13), LESION[1], LESION[2]))
    m = lesion_metrics(shifted, ref, brain, THRESHOLD, SPACING)
    assert set(m) == set(LESION_METRICS)
    voxels = 6 * 6 * 4
    assert m["volume_ref_ml"] == pytest.approx(voxels * 16 / 1000)
    assert m["volume_pred_ml"] == pytest.approx(m["volume_ref_ml"])
    assert m["dice"] == pytest.approx(5 / 6)
    assert m["hd95"] == pytest.approx(SPACING[0])
    assert volume_ml(np.ones((10, 10, 10)), (1, 1, 1)) == 1.0


# ----------------------------------------------------------------------------- tables


def subject(pid, seed, lesion=True, bias=0.1):
    """One simulated subject: reference maps and two methods with different errors."""
    rng = np.random.default_rng(seed)
    ref = reference_maps(seed)
    if not lesion:
        ref["tmax"] = tmax_map(None)
    methods = {
        "ssvd": {k: v * (1 + bias) for k, v in ref.items()},
        "csvd": {k: v + rng.normal(0, 0.05 * np.abs(v).mean(), SHAPE) for k, v in ref.items()},
    }
    return subject_metrics(pid, methods, ref, brain_mask(), SPACING, THRESHOLD)


def test_subject_table_has_the_design_columns():
    table = subject("sub-01", 0)
    assert tuple(table.columns) == SUBJECT_COLUMNS
    assert table["value"].dtype == np.float64
    assert set(table["participant_id"]) == {"sub-01"}


def test_every_method_map_metric_appears_even_without_a_lesion():
    for table in (subject("sub-01", 0, lesion=True), subject("sub-02", 1, lesion=False)):
        brain = table[table["region"] == "brain"]
        for method in ("ssvd", "csvd"):
            for name in paths.MAPS:
                got = set(brain[(brain["method"] == method) & (brain["map"] == name)]["metric"])
                expected = set(REGION_METRICS) | (set(LESION_METRICS) if name == "tmax" else set())
                assert got == expected, (method, name)
        assert not table.duplicated(["method", "map", "region", "metric"]).any()
    without = subject("sub-02", 1, lesion=False)
    assert "lesion" not in set(without["region"])
    tmax = without[(without["map"] == "tmax")].set_index(["method", "metric"])["value"]
    assert tmax["csvd", "dice"] == 1.0 and tmax["csvd", "iou"] == 1.0
    assert np.isnan(tmax["csvd", "hd95"])


def test_the_reference_lesion_region_holds_every_metric():
    table = subject("sub-01", 0)
    lesion = table[table["region"] == "lesion"]
    assert set(lesion["metric"]) == set(REGION_METRICS)
    ssvd_cbf = lesion[(lesion["method"] == "ssvd") & (lesion["map"] == "cbf")]
    values = ssvd_cbf.set_index("metric")["value"]
    assert values["nrmse"] == pytest.approx(0.1)
    ref = reference_maps(0)["cbf"]
    inside = brain_mask() & (reference_maps(0)["tmax"] > THRESHOLD)
    assert values["mean_ref"] == pytest.approx(ref[inside].mean())
    assert values["mean_pred"] == pytest.approx(1.1 * ref[inside].mean())


def test_a_user_lesion_mask_is_a_region_of_its_own():
    ref = reference_maps()
    ref["tmax"] = tmax_map(None)  # no Tmax lesion in the reference ...
    lesion = np.zeros(SHAPE, bool)
    lesion[10:14, 10:14, 5:7] = True  # ... but an expert lesion mask
    methods = {"ssvd": {k: v * 1.2 for k, v in ref.items()}}
    table = subject_metrics("sub-01", methods, ref, brain_mask(), SPACING, None, lesion)
    assert set(table["region"]) == {"brain", "user_mask"}
    assert set(table[table["region"] == "user_mask"]["metric"]) == set(REGION_METRICS)
    values = table.query("region == 'user_mask' and map == 'cbv'").set_index("metric")["value"]
    assert values["mean_ref"] == pytest.approx(ref["cbv"][lesion].mean())


def test_grey_and_white_matter_regions_come_from_the_tissue_masks():
    """A method that is right in grey matter and 30 % high in white matter: the regions
    tell them apart, the brain mixes them."""
    ref = reference_maps()
    brain = brain_mask()
    gm = brain & (np.indices(SHAPE)[0] < 12)
    wm = brain & ~gm
    pred = {k: np.where(wm, 1.3 * v, v) for k, v in ref.items()}
    table = subject_metrics(
        "sub-01", {"ssvd": pred}, ref, brain, SPACING, None, tissue={"gm": gm, "wm": wm}
    )
    nrmse = table.query("map == 'cbf' and metric == 'nrmse'").set_index("region")["value"]
    assert nrmse["gm"] == 0.0
    assert nrmse["wm"] == pytest.approx(0.3)
    assert 0 < nrmse["brain"] < 0.3
    assert list(dict.fromkeys(table["region"])) == ["brain", "gm", "wm", "lesion"]


def test_maps_missing_from_method_or_reference_are_skipped():
    ref = reference_maps()
    methods = {"talebi": {"cbf": ref["cbf"], "cbv": ref["cbv"]}}  # a model predicting two maps
    table = subject_metrics("sub-01", methods, {"cbf": ref["cbf"]}, brain_mask(), SPACING)
    assert set(table["map"]) == {"cbf"}


def test_a_failed_method_with_nan_maps_does_not_crash_the_table():
    ref = reference_maps()
    broken = {k: np.full(SHAPE, np.nan) for k in ref}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = subject_metrics("sub-01", {"osvd": broken}, ref, brain_mask(), SPACING)
    values = table.set_index(["map", "region", "metric"])["value"]
    assert values["cbf", "brain", "finite_fraction"] == 0.0
    assert np.isnan(values["cbf", "brain", "nrmse"])
    assert values["tmax", "brain", "dice"] == 0.0  # reference has a lesion, prediction none


def test_study_table_aggregates_subjects_like_numpy():
    subjects = pd.concat([subject(f"sub-{i:02d}", i, bias=0.05 * i) for i in range(1, 6)])
    study = study_table(subjects)
    assert tuple(study.columns) == STUDY_COLUMNS
    row = study.set_index(["method", "map", "region", "metric"]).loc[
        "ssvd", "cbf", "brain", "nrmse"
    ]
    values = subjects.query(
        "method == 'ssvd' and map == 'cbf' and region == 'brain' and metric == 'nrmse'"
    )["value"].to_numpy()
    np.testing.assert_allclose(values, 0.05 * np.arange(1, 6))
    assert row["n"] == 5
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["sd"] == pytest.approx(np.std(values, ddof=1))
    assert row["median"] == pytest.approx(np.median(values))
    assert row["q1"] == pytest.approx(np.percentile(values, 25))
    assert row["q3"] == pytest.approx(np.percentile(values, 75))


def test_study_table_has_a_row_for_every_method_map_metric():
    subjects = pd.concat([subject("sub-01", 1, lesion=False), subject("sub-02", 2)])
    study = study_table(subjects)
    brain = study[study["region"] == "brain"]
    expected = len(paths.MAPS) * len(REGION_METRICS) + len(LESION_METRICS)
    assert (brain.groupby("method").size() == expected).all()
    hd = study.set_index(["method", "map", "region", "metric"]).loc["csvd", "tmax", "brain", "hd95"]
    assert hd["n"] == 1  # the subject without lesions has no HD95
    lesion = study[(study["region"] == "lesion") & (study["map"] == "cbf")]
    assert (lesion["n"] == 1).all()  # one subject has a lesion


def test_nan_and_infinite_values_are_skipped_and_n_counts_finite_ones():
    subjects = pd.DataFrame(
        {
            "participant_id": ["sub-01", "sub-02", "sub-03", "sub-04"],
            "method": "ssvd",
            "map": "cbf",
            "region": "brain",
            "metric": "psnr",
            "value": [30.0, np.inf, np.nan, 40.0],
        }
    )
    row = study_table(subjects).iloc[0]
    assert row["n"] == 2 and row["mean"] == 35.0 and row["median"] == 35.0


def test_strata_from_participants_group_the_study_table():
    subjects = pd.concat([subject(f"sub-{i:02d}", i, bias=0.1 * i) for i in range(1, 5)])
    participants = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(1, 5)],
            "group": ["stroke", "stroke", "control", "control"],
        }
    )
    study = study_table(subjects, participants, strata=["group"])
    assert list(study.columns) == ["group", *STUDY_COLUMNS]
    nrmse_rows = study.query(
        "method == 'ssvd' and map == 'cbf' and region == 'brain' and metric == 'nrmse'"
    )
    means = nrmse_rows.set_index("group")["mean"]
    assert means["stroke"] == pytest.approx(0.15) and means["control"] == pytest.approx(0.35)
    assert means["all"] == pytest.approx(0.25), "the whole cohort comes first"
    assert nrmse_rows.set_index("group")["n"].to_dict() == {"all": 4, "stroke": 2, "control": 2}
    with pytest.raises(ValueError, match="site"):
        study_table(subjects, participants, strata=["site"])


def test_study_tables_are_written_where_paths_says(tmp_path):
    tables = []
    for i in range(1, 4):
        path = tmp_path / f"sub-{i:02d}_metrics.tsv"
        write_tsv(subject(f"sub-{i:02d}", i), path)
        tables.append(path)
    participants = tmp_path / "participants.tsv"
    pd.DataFrame(
        {"participant_id": ["sub-01", "sub-02", "sub-03"], "site": ["A", "B", "A"]}
    ).to_csv(participants, sep="\t", index=False)
    out = tmp_path / "results"
    written = write_study_tables(tables, out, participants=participants, strata=["site"])
    assert written == {
        "subjects": paths.subjects_table(out),
        "study": paths.study_table(out),
        "paired": paths.paired_table(out),
        "markdown": paths.study_markdown(out),
    }
    subjects = read_subject_tables([paths.subjects_table(out)])
    assert len(subjects) == sum(len(pd.read_csv(t, sep="\t")) for t in tables)
    study = pd.read_csv(paths.study_table(out), sep="\t")
    assert list(study.columns) == ["site", *STUDY_COLUMNS]
    assert "\t" in paths.study_table(out).read_text().splitlines()[0]
    markdown = paths.study_markdown(out).read_text()
    assert markdown.startswith("# bolus study metrics")
    assert "## CBF (ml/100 g/min)" in markdown and "## TMAX (s)" in markdown
    assert "| site | method | region | metric | n | mean | sd | median | q1 | q3 |" in markdown


def test_an_empty_cohort_writes_empty_tables(tmp_path):
    written = write_study_tables([], tmp_path)
    assert list(pd.read_csv(written["study"], sep="\t").columns) == list(STUDY_COLUMNS)
    assert "No metrics" in written["markdown"].read_text()


def test_an_empty_subject_frame_writes_empty_tables(tmp_path):
    empty = pd.DataFrame(columns=list(SUBJECT_COLUMNS))
    written = write_study_tables(empty, tmp_path, participants=None)
    assert pd.read_csv(written["subjects"], sep="\t").empty
    assert pd.read_csv(written["study"], sep="\t").empty
