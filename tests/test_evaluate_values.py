"""Every metric against a value computed by hand on a small volume, ROC analysis, regions."""

from __future__ import annotations

import numpy as np
import pytest

from bolus.evaluate.lesions import lesion_metrics, roc_auc, youden_threshold
from bolus.evaluate.metrics import mae, nrmse, pcc, psnr, regional_means, rmse, scc, ssim
from bolus.evaluate.regions import (
    find_tissue_labels,
    load_tissue_masks,
    subject_regions,
    tissue_masks,
)
from bolus.io.errors import SubjectError
from bolus.io.nifti import save_like

# ----------------------------------------------------------------------------- five voxels

#: five voxels of a 4×4×4 volume; the rest of the volume is outside the mask
FIVE = (np.array([0, 1, 2, 3, 1]), np.array([0, 1, 2, 3, 2]), np.array([0, 0, 1, 1, 3]))
REF5 = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
PRED5 = np.array([2.0, 1.0, 4.0, 3.0, 5.0])  # differences +1 −1 +1 −1 0


def five_voxels(values, outside=100.0):
    volume = np.full((4, 4, 4), outside)
    volume[FIVE] = values
    return volume


@pytest.fixture
def five():
    mask = np.zeros((4, 4, 4), bool)
    mask[FIVE] = True
    return five_voxels(PRED5, outside=-7.0), five_voxels(REF5), mask


def test_errors_by_hand_on_five_voxels(five):
    pred, ref, mask = five
    assert mae(pred, ref, mask) == pytest.approx(4 / 5)  # |±1| four times, 0 once
    assert rmse(pred, ref, mask) == pytest.approx(np.sqrt(4 / 5))
    assert nrmse(pred, ref, mask) == pytest.approx(2 / np.sqrt(1 + 4 + 9 + 16 + 25))


def test_correlations_by_hand_on_five_voxels(five):
    """Both samples are already ranks 1…5, so Pearson = Spearman = 1 − 6·Σd²/(n(n²−1))
    = 1 − 6·4/120 = 0.8."""
    pred, ref, mask = five
    assert pcc(pred, ref, mask) == pytest.approx(0.8)
    assert scc(pred, ref, mask) == pytest.approx(0.8)


def test_spearman_sees_ranks_only():
    """pred = ref³ is monotone: SCC 1 while PCC < 1; ties take their average rank."""
    mask = np.zeros((4, 4, 4), bool)
    mask[FIVE] = True
    ref = five_voxels(REF5)
    assert scc(ref**3, ref, mask) == pytest.approx(1.0)
    assert pcc(ref**3, ref, mask) < 0.95
    tied = five_voxels([1.0, 1.0, 2.0, 3.0, 3.0])  # ranks 1.5 1.5 3 4.5 4.5
    ranks = np.array([1.5, 1.5, 3.0, 4.5, 4.5])
    expected = np.corrcoef(ranks, np.arange(1, 6))[0, 1]
    assert scc(tied, ref, mask) == pytest.approx(expected)
    assert scc(-ref, ref, mask) == pytest.approx(-1.0)


def test_regional_means_by_hand(five):
    pred, ref, mask = five
    assert regional_means(pred, ref, mask) == pytest.approx((3.0, 3.0))


def test_psnr_by_hand_on_a_full_box():
    """Mask = the whole 5×5×5 volume: PSNR = 10·log10(range² / MSE)."""
    rng = np.random.default_rng(3)
    ref = rng.uniform(10, 30, (5, 5, 5))
    pred = ref + rng.normal(0, 1, ref.shape)
    mask = np.ones(ref.shape, bool)
    expected = 10 * np.log10((ref.max() - ref.min()) ** 2 / np.mean((pred - ref) ** 2))
    assert psnr(pred, ref, mask) == pytest.approx(expected)


def test_ssim_by_hand_on_one_window():
    """A 7×7×7 box holds exactly one 7³ window (skimage crops (7−1)/2 voxels at each
    border), so SSIM is the single-window formula of Wang et al. (2004) with sample
    (co)variances, data range L = the reference's range, C1 = (0.01 L)², C2 = (0.03 L)²."""
    rng = np.random.default_rng(4)
    ref = rng.uniform(0, 50, (7, 7, 7))
    pred = 0.8 * ref + rng.normal(0, 5, ref.shape) + 3
    mask = np.ones(ref.shape, bool)
    L = ref.max() - ref.min()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    mx, my = pred.mean(), ref.mean()
    vx, vy = pred.var(ddof=1), ref.var(ddof=1)
    cov = np.sum((pred - mx) * (ref - my)) / (pred.size - 1)
    expected = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(pred, ref, mask) == pytest.approx(expected, rel=1e-9)


def test_ssim_and_psnr_use_the_reference_range_in_the_mask_not_the_volume():
    """A huge value outside the mask changes neither (data range from the mask only)."""
    rng = np.random.default_rng(5)
    ref = rng.uniform(0, 50, (9, 9, 9))
    pred = ref + rng.normal(0, 3, ref.shape)
    mask = np.zeros(ref.shape, bool)
    mask[1:8, 1:8, 1:8] = True
    far = ref.copy()
    far[0, 0, 0] = 1e6
    assert ssim(pred, far, mask) == pytest.approx(ssim(pred, ref, mask))
    assert psnr(pred, far, mask) == pytest.approx(psnr(pred, ref, mask))


# ----------------------------------------------------------------------------- ROC


def test_auc_by_hand():
    # positives 2 and 4 against negatives 1 and 3: 3 of the 4 pairs ordered right
    assert roc_auc([1, 2, 3, 4], [False, True, False, True]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts ½: (½ + 1) / 2
    assert roc_auc([1, 1, 2], [True, False, True]) == pytest.approx(0.75)
    assert roc_auc([1, 2], [True, True]) != roc_auc([1, 2], [True, True])  # NaN: one class


def test_auc_agrees_with_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    truth = rng.random(5000) < 0.2
    score = np.round(rng.normal(truth * 1.5, 1.0), 1)  # rounded: many ties
    assert roc_auc(score, truth) == pytest.approx(roc_auc_score(truth, score), abs=1e-12)


def test_youden_threshold_by_hand():
    """Cuts of [1..6] with lesion at 3, 5, 6: J = 1/3, 2/3, 1/3, 2/3, 1/3 for score ≥ 2…6;
    the two best cuts tie, the higher (score > 4.5) is taken."""
    threshold, j = youden_threshold([1, 2, 3, 4, 5, 6], [0, 0, 1, 0, 1, 1])
    assert threshold == pytest.approx(4.5)
    assert j == pytest.approx(2 / 3)


def test_roc_threshold_recovers_a_lesion_that_a_biased_method_misses_at_6_s():
    """A method that halves Tmax (lesion 9 s → 4.5 s, tissue 2 s → 1 s) finds no lesion at
    6 s, but its ROC-chosen threshold (between 1 and 4.5 s) finds the lesion exactly."""
    shape = (16, 16, 8)
    brain = np.ones(shape, bool)
    ref = np.full(shape, 2.0)
    ref[4:9, 5:10, 2:5] = 9.0
    m = lesion_metrics(ref / 2, ref, brain, 6.0, (2.0, 2.0, 4.0))
    assert m["dice"] == 0.0 and m["volume_pred_ml"] == 0.0
    assert m["volume_diff_ml"] == pytest.approx(-5 * 5 * 3 * 16 / 1000)
    assert m["auc"] == 1.0
    assert m["roc_threshold_s"] == pytest.approx((1.0 + 4.5) / 2)
    assert m["dice_roc"] == 1.0 and m["iou_roc"] == 1.0 and m["hd95_roc"] == 0.0
    assert m["volume_diff_roc_ml"] == 0.0


def test_failed_voxels_count_as_not_lesion_in_the_roc():
    shape = (10, 10, 4)
    brain = np.ones(shape, bool)
    ref = np.full(shape, 2.0)
    ref[2:5, 2:5, 1:3] = 9.0
    pred = ref.copy()
    pred[2:5, 2:5, 1] = np.nan  # half the lesion failed
    m = lesion_metrics(pred, ref, brain, 6.0, (1.0, 1.0, 1.0))
    # the failed half ranks lowest (with −inf): AUC = P(pos > neg) = ½·1 + ½·0
    assert m["auc"] == pytest.approx(0.5)
    assert m["dice_roc"] == pytest.approx(m["dice"]) == pytest.approx(2 * 9 / (9 + 18))


def test_no_reference_lesion_leaves_the_roc_metrics_undefined():
    shape = (8, 8, 4)
    m = lesion_metrics(
        np.full(shape, 7.0), np.full(shape, 2.0), np.ones(shape, bool), 6.0, (1,) * 3
    )
    assert m["dice"] == 0.0 and m["volume_diff_ml"] == pytest.approx(0.256)
    for key in ("auc", "roc_threshold_s", "dice_roc", "iou_roc", "hd95_roc", "volume_diff_roc_ml"):
        assert np.isnan(m[key]), key


# ----------------------------------------------------------------------------- regions


LOOKUP = {0: "background", 3: "CSF", 4: "GM", 5: "White_Matter", 8: "core"}


def test_tissue_masks_follow_the_lookup_names():
    labels = np.array([[[0, 3, 4, 5, 8, 4]]])
    masks = tissue_masks(labels, LOOKUP)
    np.testing.assert_array_equal(masks["gm"].ravel(), [0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(masks["wm"].ravel(), [0, 0, 0, 1, 0, 0])
    assert tissue_masks(labels, {1: "scalp"}) == {}


def test_regions_are_ordered_and_empty_ones_left_out():
    brain = np.zeros((6, 6, 2), bool)
    brain[1:5, 1:5] = True
    tmax = np.full(brain.shape, 2.0)
    tmax[1:3, 1:3] = 9.0
    gm = np.zeros(brain.shape, bool)
    gm[0] = True  # only outside the brain: empty once inside it
    wm = np.ones(brain.shape, bool)
    regions = subject_regions({"tmax": tmax}, brain, 6.0, brain & (tmax < 6), {"gm": gm, "wm": wm})
    assert list(regions) == ["brain", "wm", "lesion", "user_mask"]
    np.testing.assert_array_equal(regions["wm"], brain)
    assert regions["lesion"].sum() == 2 * 2 * 2
    assert regions["user_mask"].sum() == brain.sum() - 8


def test_tissue_labels_from_the_reference_dir_or_a_column(tmp_path):
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    labels = np.zeros((6, 6, 3), np.uint8)
    labels[:3] = 4
    labels[3:] = 5
    ref_dir = tmp_path / "truth"
    save_like(labels, affine, ref_dir / "labels.nii.gz", dtype=np.uint8)
    with pytest.raises(SubjectError, match="sub-01: .*labels.nii.gz: .*labels.tsv"):
        load_tissue_masks("sub-01", labels.shape, affine, reference_dir=ref_dir)
    (ref_dir / "labels.tsv").write_text("index\tname\n4\tgm\n5\twm\n")
    masks = load_tissue_masks("sub-01", labels.shape, affine, reference_dir=ref_dir)
    assert masks["gm"].sum() == masks["wm"].sum() == 3 * 6 * 3
    # a participants.tsv column wins over the reference_dir; its table sits beside it
    seg = tmp_path / "seg" / "sub-01_dseg.nii.gz"
    save_like(labels, affine, seg, dtype=np.uint8)
    (tmp_path / "seg" / "sub-01_dseg.tsv").write_text("index\tname\n5\tgrey matter\n")
    assert find_tissue_labels("sub-01", ref_dir, seg)[1].name == "sub-01_dseg.tsv"
    masks = load_tissue_masks("sub-01", labels.shape, affine, ref_dir, tissue_labels=seg)
    assert set(masks) == {"gm"} and masks["gm"].sum() == 3 * 6 * 3
    assert load_tissue_masks("sub-01", labels.shape, affine, tmp_path / "none") == {}
