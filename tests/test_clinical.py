"""Clinical readouts on hand-made masks with known volumes, and the agreement statistics
by hand (bolus.evaluate.clinical)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bolus.evaluate import clinical as cl

#: 5 × 5 × 4 mm voxels: 0.1 ml each, so volumes are voxel counts / 10 (exact in binary
#: floating point up to rounding: compared with pytest.approx)
SPACING = (5.0, 5.0, 4.0)
AFFINE = np.diag([*SPACING, 1.0])
SHAPE = (20, 20, 10)


def stroke_case():
    """Tissue everywhere; the right half (RAS x > midline: i ≥ 10) holds a lesion of 300
    voxels with Tmax > 6 s, in it 100 voxels with Tmax 12 s (60 of them core: CBF 4), and 50
    more voxels with Tmax 5 s; elsewhere Tmax 1 s and CBF 50 (left) or 40 (right)."""
    tissue = np.ones(SHAPE, bool)
    cbf = np.full(SHAPE, 50.0)
    cbf[10:] = 40.0
    tmax = np.ones(SHAPE)
    tmax[10:15, 0:10, 0:6] = 7.0  # 300 voxels > 6 s
    tmax[10:15, 0:10, 0:2] = 12.0  # 100 of them > 10 s
    tmax[10:15, 10:20, 0:1] = 5.0  # 50 voxels in (4, 6]
    cbf[10:13, 0:10, 0:2] = 4.0  # 60 voxels: core (4 < 0.3 × 50)
    cbf[0:2, 0:10, 0:1] = 4.0  # 20 voxels of low flow without delay: not core (Tmax 1 s)
    return cbf, tmax, tissue


def test_stroke_volumes_by_hand():
    cbf, tmax, tissue = stroke_case()
    left = cl.hemispheres(tissue, AFFINE)["left"]
    out = cl.stroke_readouts(cbf, tmax, tissue, SPACING, unaffected=left)
    assert out["tmax_gt4s_ml"] == pytest.approx(35.0)
    assert out["tmax_gt6s_ml"] == pytest.approx(30.0)
    assert out["tmax_gt8s_ml"] == pytest.approx(10.0)
    assert out["tmax_gt10s_ml"] == pytest.approx(10.0)
    # the unaffected (left) hemisphere: 2000 voxels, 20 of them at 4, the rest at 50
    assert out["unaffected_cbf"] == pytest.approx((1980 * 50 + 20 * 4) / 2000)
    assert out["core_ml"] == pytest.approx(6.0)
    assert out["mismatch_ml"] == pytest.approx(24.0)
    assert out["mismatch_ratio"] == pytest.approx(5.0)
    assert out["hir"] == pytest.approx(10.0 / 30.0)
    assert out["target_mismatch"] == 1.0  # core 6 < 70, ratio 5 ≥ 1.8, mismatch 24 ≥ 15


def test_core_anywhere_when_core_tmax_is_null():
    cbf, tmax, tissue = stroke_case()
    left = cl.hemispheres(tissue, AFFINE)["left"]
    out = cl.stroke_readouts(cbf, tmax, tissue, SPACING, unaffected=left,
                             clinical={"core_tmax_s": None})  # fmt: skip
    assert out["core_ml"] == pytest.approx(8.0)  # the 20 voxels without delay count too


def test_no_lesion_gives_zero_volumes_and_no_ratio():
    tissue = np.ones(SHAPE, bool)
    out = cl.stroke_readouts(np.full(SHAPE, 50.0), np.ones(SHAPE), tissue, SPACING)
    assert out["core_ml"] == 0 and out["tmax_gt6s_ml"] == 0 and out["mismatch_ml"] == 0
    assert np.isnan(out["mismatch_ratio"]) and np.isnan(out["hir"])
    assert out["target_mismatch"] == 0.0


def test_empty_core_gives_an_infinite_ratio():
    tissue = np.ones(SHAPE, bool)
    tmax = np.ones(SHAPE)
    tmax[:5, :10, :4] = 8.0  # 200 voxels = 20 ml > 6 s, no low flow
    out = cl.stroke_readouts(np.full(SHAPE, 50.0), tmax, tissue, SPACING)
    assert out["core_ml"] == 0 and out["mismatch_ratio"] == np.inf
    assert out["target_mismatch"] == 1.0


def test_scattered_voxels_are_no_lesion():
    """min_cluster_ml (5 ml by default): a 60-voxel block (6 ml) counts, 40 isolated voxels
    of long Tmax (4 ml in all, 0.1 ml each) do not; with 0 they all do."""
    tissue = np.ones(SHAPE, bool)
    tmax = np.ones(SHAPE)
    tmax[0:3, 0:10, 0:2] = 9.0  # 60 voxels in one block
    tmax[6:20:2, 12:20:2, 5:10:2][:, :, :] = 9.0  # isolated voxels, two apart
    scattered = int((tmax[6:20, 12:20, 5:10] > 6).sum())
    out = cl.stroke_readouts(np.full(SHAPE, 50.0), tmax, tissue, SPACING)
    assert out["tmax_gt6s_ml"] == pytest.approx(6.0)
    kept = cl.stroke_readouts(np.full(SHAPE, 50.0), tmax, tissue, SPACING,
                              clinical={"min_cluster_ml": 0})  # fmt: skip
    assert kept["tmax_gt6s_ml"] == pytest.approx(6.0 + scattered / 10)


@pytest.mark.parametrize(
    ("core", "ratio", "mismatch", "met"),
    [(69.9, 1.8, 15.0, True), (70.0, 3.0, 50.0, False), (10.0, 1.79, 30.0, False),
     (10.0, 2.0, 14.9, False), (0.0, np.inf, 20.0, True), (np.nan, 2.0, 20.0, False)],
)  # fmt: skip
def test_target_mismatch_boundaries(core, ratio, mismatch, met):
    """DEFUSE 3: core < 70 ml, ratio ≥ 1.8, mismatch ≥ 15 ml (boundaries as published)."""
    assert cl.target_mismatch(core, ratio, mismatch) is met


def test_non_finite_tmax_is_never_hypoperfused():
    tissue = np.ones(SHAPE, bool)
    tmax = np.full(SHAPE, np.nan)
    tmax[0, 0, 0] = np.inf
    assert not cl.hypoperfusion(tmax, tissue, 6.0)[1:].any()


def test_tumour_rcbv_by_hand():
    rcbv = np.zeros(SHAPE)
    lesion = np.zeros(SHAPE, bool)
    lesion[0, 0, :10] = True
    rcbv[0, 0, :10] = np.arange(1.0, 11.0)
    out = cl.tumour_readouts(rcbv, lesion)
    assert out["lesion_rcbv_mean"] == pytest.approx(5.5)
    assert out["lesion_rcbv_median"] == pytest.approx(5.5)
    assert out["lesion_rcbv_p90"] == pytest.approx(9.1)  # numpy's linear interpolation
    assert all(np.isnan(v) for v in cl.tumour_readouts(rcbv, None).values())


def test_relative_map_divides_by_the_region_mean():
    values = np.full(SHAPE, 6.0)
    region = np.zeros(SHAPE, bool)
    region[:2] = True
    values[:1] = 2.0  # region mean 4
    rel = cl.relative_map(values, region)
    assert rel[5, 5, 5] == pytest.approx(1.5) and rel[0, 0, 0] == pytest.approx(0.5)
    assert np.isnan(cl.relative_map(values, np.zeros(SHAPE, bool))).all()


def test_lesion_side_and_hemispheres_follow_ras_x():
    brain = np.ones(SHAPE, bool)
    halves = cl.hemispheres(brain, AFFINE)
    assert halves["right"][15].all() and halves["left"][5].all()
    assert not (halves["right"] & halves["left"]).any()
    lesion = np.zeros(SHAPE, bool)
    lesion[12:16, 3:6, 2:4] = True
    assert cl.lesion_side(lesion, brain, AFFINE) == "right"
    flipped = AFFINE.copy()
    flipped[0, 0], flipped[0, 3] = -SPACING[0], SPACING[0] * (SHAPE[0] - 1)  # x runs the other way
    assert cl.lesion_side(lesion, brain, flipped) == "left"
    assert cl.lesion_side(np.zeros(SHAPE, bool), brain, AFFINE) is None


def test_reference_region_is_contralateral_white_matter_away_from_the_lesion():
    tissue = np.ones(SHAPE, bool)
    tissue[0, 0, 0] = False  # a vessel
    wm = np.zeros(SHAPE, bool)
    wm[2:18, 2:18, 2:8] = True
    lesion = np.zeros(SHAPE, bool)
    lesion[12:16, 3:6, 2:4] = True
    region = cl.reference_region(tissue, AFFINE, white_matter=wm, exclude=lesion, side="right",
                                 erosion_voxels=1, margin_mm=10.0)  # fmt: skip
    assert region.any()
    assert not region[10:].any()  # the left hemisphere only
    assert (region <= wm).all()
    assert not region[2, :, :].any() and not region[:, 2, :].any()  # eroded in-plane
    assert region[3:10, 3:17, 2:8].all()  # not eroded through-plane
    both = cl.reference_region(tissue, AFFINE, white_matter=wm, exclude=lesion, erosion_voxels=1)
    assert not both[11:17, 2:7, 1:5].any()  # within 10 mm of the lesion: left out
    assert both[14, 14, 5]
    user = np.zeros(SHAPE, bool)
    user[0, 0, :2] = True
    got = cl.reference_region(tissue, AFFINE, white_matter=wm, user_mask=user)
    assert got.sum() == 1  # the user mask wins, inside the tissue only


def test_reference_region_relaxes_its_constraints_to_reach_its_minimum():
    """A lesion over the left white matter and a bit of the right: the right white matter
    beyond 10 mm of it is below the minimum, so the margin is given up (the lesion itself
    stays out); with a minimum no region reaches, the last (no hemisphere, no margin) is
    kept."""
    tissue = np.ones(SHAPE, bool)
    wm = np.zeros(SHAPE, bool)
    wm[2:18, 2:18, 2:8] = True
    lesion = np.zeros(SHAPE, bool)
    lesion[3:12, 2:18, 2:8] = True  # the left hemisphere's WM and a bit of the right's
    strict = cl.reference_region(tissue, AFFINE, white_matter=wm, exclude=lesion, side="left",
                                 erosion_voxels=0, margin_mm=10.0)  # fmt: skip
    relaxed = cl.reference_region(tissue, AFFINE, white_matter=wm, exclude=lesion, side="left",
                                  erosion_voxels=0, margin_mm=10.0, min_ml=50.0)  # fmt: skip
    # strict: the right white matter beyond 10 mm of the lesion, i 14–17: 38.4 ml
    assert cl.volume_ml(strict, SPACING) == pytest.approx(38.4)
    # without the margin: the right white matter but the lesion, i 12–17: 57.6 ml ≥ 50
    assert cl.volume_ml(relaxed, SPACING) == pytest.approx(57.6)
    assert not (relaxed & lesion).any() and not relaxed[:10].any()
    everywhere = cl.reference_region(tissue, AFFINE, white_matter=wm, exclude=lesion,
                                     side="left", erosion_voxels=0, min_ml=80.0)  # fmt: skip
    assert cl.volume_ml(everywhere, SPACING) == pytest.approx(67.2)  # + the left i = 2


def test_method_readouts_relative_tissue_means():
    tissue = np.ones(SHAPE, bool)
    wm = np.zeros(SHAPE, bool)
    wm[:10] = True
    gm = ~wm
    cbv = np.where(wm, 2.0, 5.0)
    cbf = np.where(wm, 20.0, 60.0)
    maps = {"cbv": cbv, "cbf": cbf, "tmax": np.ones(SHAPE)}
    out, relative = cl.method_readouts(maps, wm, tissue, SPACING, gm=gm, wm=wm)
    assert out["wm_rcbv"] == pytest.approx(1.0) and out["gm_rcbv"] == pytest.approx(2.5)
    assert out["gm_rcbf"] == pytest.approx(3.0) and out["reference_cbv"] == pytest.approx(2.0)
    assert out["reference_region_ml"] == pytest.approx(200.0)
    assert set(relative) == {"rcbv", "rcbf"}
    assert list(out) == cl.readout_columns()


# ----------------------------------------------------------------------------- agreement


def test_bland_altman_by_hand():
    out = cl.bland_altman([2.0, 4.0, 6.0, np.nan], [1.0, 2.0, 3.0, 4.0])
    d = np.array([1.0, 2.0, 3.0])
    assert out["n"] == 3 and out["bias"] == pytest.approx(2.0)
    assert out["sd_difference"] == pytest.approx(d.std(ddof=1))
    assert out["loa_high"] == pytest.approx(2.0 + 1.96 * d.std(ddof=1))


def test_icc_2_1_by_hand():
    """method = reference + 1 on 4 subjects: MSR 10/3, MSC 2, MSE 0, so ICC(2,1) =
    (10/3) / (10/3 + 2·2/4) = 10/13: absolute agreement is penalised by the bias that a
    consistency ICC would ignore."""
    assert cl.icc_2_1([2, 3, 4, 5], [1, 2, 3, 4]) == pytest.approx(10 / 13)
    assert cl.icc_2_1([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert np.isnan(cl.icc_2_1([1.0], [1.0]))


def test_icc_2_1_matches_shrout_fleiss_formula_on_noise():
    rng = np.random.default_rng(0)
    truth = rng.normal(50, 10, 30)
    a, b = truth + rng.normal(0, 3, 30), truth + rng.normal(2, 3, 30)
    y = np.stack([a, b], 1)
    n, k = y.shape
    msr = k * y.mean(1).var(ddof=1)
    msc = n * y.mean(0).var(ddof=1)
    mse = ((y - y.mean(1, keepdims=True) - y.mean(0) + y.mean()) ** 2).sum() / ((n - 1) * (k - 1))
    expected = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    assert cl.icc_2_1(a, b) == pytest.approx(expected)


def test_decision_agreement_by_hand():
    out = cl.decision_agreement([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert out["sensitivity"] == pytest.approx(2 / 3) and out["specificity"] == pytest.approx(0.5)
    assert out["n_positive"] == 3 and out["n_negative"] == 2


def test_agreement_table_per_method_and_readout():
    rows = []
    for i, pid in enumerate(["sub-01", "sub-02", "sub-03"]):
        rows.append({"participant_id": pid, "method": "reference", "core_ml": 10.0 * i,
                     "target_mismatch": float(i > 0)})  # fmt: skip
        rows.append({"participant_id": pid, "method": "osvd", "core_ml": 10.0 * i + 1,
                     "target_mismatch": 1.0})  # fmt: skip
    table = cl.agreement_table(pd.DataFrame(rows), "reference", ["core_ml"])
    assert list(table["readout"]) == ["core_ml", "target_mismatch"]
    core = table.iloc[0]
    assert core["method"] == "osvd" and core["n"] == 3 and core["bias"] == pytest.approx(1.0)
    decision = table.iloc[1]
    assert decision["sensitivity"] == 1.0 and decision["specificity"] == 0.0
    assert decision["mean_method"] == 1.0 and decision["mean_reference"] == pytest.approx(2 / 3)
    assert np.isnan(decision["bias"]) and np.isnan(decision["icc_2_1"])
    assert cl.agreement_table(pd.DataFrame(rows).query("method == 'osvd'")).empty


# ----------------------------------------------------------------------------- simulated


@pytest.fixture(scope="module")
def simulated():
    """A healthy and a stroke subject of the default grid (64 × 64 × 12, 3.4 × 3.4 × 6 mm,
    default SNR): truth, the three SVD methods' maps from the noisy signal with the
    automatic AIF, and the readouts of each (reference region: the simulator's white
    matter, away from the truth's Tmax > 6 s, opposite the stroke)."""
    from bolus.io.nifti import voxel_size_mm
    from bolus.perfusion.aif import select_aif
    from bolus.perfusion.concentration import concentration_from_signal
    from bolus.simulate.cohort import simulate_subject
    from bolus.stages import compute_maps

    cases = {}
    for number, pathology in ((1, "healthy"), (2, "stroke")):
        sim = simulate_subject(7, number, pathology)
        labels, brain = sim.truth["labels"], sim.truth["brain"] > 0
        affine = sim.phantom.grid.affine_ras
        spacing = voxel_size_mm(affine)
        truth = {k: np.where(brain, sim.truth[k], np.nan) for k in ("cbf", "cbv", "tmax")}
        side = sim.phantom.info.get("stroke_side")
        region = cl.reference_region(brain, affine, white_matter=labels == 5,
                                     exclude=sim.truth["lesion"] > 0, side=side)  # fmt: skip
        unaffected = None
        if side:
            unaffected = cl.hemispheres(brain, affine)["left" if side == "right" else "right"]
        conc, _ = concentration_from_signal(sim.signal, sim.te_s, sim.time_s, mask=brain)
        head = labels > 0
        aif = select_aif(conc, sim.time_s, head)
        maps = {
            m: compute_maps(conc, sim.time_s, aif.curve, m, head) for m in ("ssvd", "csvd", "osvd")
        }
        maps["reference"] = truth
        readouts = {
            m: cl.method_readouts(
                v, region, brain, spacing, unaffected=unaffected, gm=labels == 4, wm=labels == 5
            )[0]  # fmt: skip
            for m, v in maps.items()
        }
        cases[pathology] = (sim, readouts, np.prod(spacing) / 1000.0)
    return cases


def test_truth_readouts_equal_the_simulated_lesion_volumes(simulated):
    """The reference (truth) maps of a simulated stroke: Tmax > 6 s is the simulator's
    lesion.nii.gz (same definition, exact) and, here, its core + penumbra labels; the core
    (CBF < 30 % of the unaffected hemisphere, Tmax > 6 s) is the core label within 10 %:
    the truth core's CBF (8–12 ml/100 g/min) sits just below 30 % of a hemisphere mean of
    35–45, so a subject with low healthy flow loses the core's highest-flow voxels
    (measured: 9.71 ml both, 0 % on this subject). The healthy subject has none of them."""
    sim, readouts, voxel_ml = simulated["stroke"]
    truth = readouts["reference"]
    labels = sim.truth["labels"]
    assert truth["tmax_gt6s_ml"] == pytest.approx(sim.truth["lesion"].sum() * voxel_ml)
    assert truth["tmax_gt6s_ml"] == pytest.approx(np.isin(labels, (8, 9)).sum() * voxel_ml,
                                                  rel=0.05)  # fmt: skip
    assert truth["core_ml"] == pytest.approx((labels == 8).sum() * voxel_ml, rel=0.10)
    assert truth["mismatch_ml"] == pytest.approx(truth["tmax_gt6s_ml"] - truth["core_ml"])
    assert truth["target_mismatch"] == 1.0
    healthy = simulated["healthy"][1]["reference"]
    assert healthy["core_ml"] == 0 and healthy["tmax_gt6s_ml"] == 0


@pytest.mark.parametrize("method", ["ssvd", "csvd", "osvd"])
@pytest.mark.parametrize("pathology", ["healthy", "stroke"])
def test_svd_rcbv_of_white_and_grey_matter(simulated, method, pathology):
    """rCBV of the simulated white matter is 1.00 ± 0.05 and of grey matter the simulator's
    GM/WM CBV ratio within 10 %, for every SVD method. Tolerance: CBV is the area ratio
    ∫C/∫AIF for all three (the same map), so only noise and partial volume at 3.4 × 3.4 ×
    6 mm move it; measured WM 1.003–1.010, GM within 2 % of the ratio (1.96–2.04 vs
    2.00–2.07)."""
    sim, readouts, _ = simulated[pathology]
    out = readouts[method]
    info = sim.phantom.info
    assert out["wm_rcbv"] == pytest.approx(1.0, abs=0.05)
    assert out["gm_rcbv"] == pytest.approx(info["gm_cbv"] / info["wm_cbv"], rel=0.10)


def test_svd_stroke_readouts_agree_with_the_truth(simulated):
    """The SVD methods find the simulated stroke's hypoperfusion: Tmax > 6 s within 15 % of
    the truth's (measured, with the default 5 ml cluster cleanup: sSVD −0.3 %, cSVD −3 %,
    oSVD −4 %), all call the target mismatch the truth calls, and none finds more than 10 ml
    of Tmax > 6 s in the healthy subject (measured 0 ml; 0.1–3.5 ml without the cleanup)."""
    _, readouts, _ = simulated["stroke"]
    truth = readouts["reference"]
    for method in ("ssvd", "csvd", "osvd"):
        out = readouts[method]
        assert out["tmax_gt6s_ml"] == pytest.approx(truth["tmax_gt6s_ml"], rel=0.15), method
        assert out["target_mismatch"] == truth["target_mismatch"], method
        assert simulated["healthy"][1][method]["tmax_gt6s_ml"] <= 10.0, method


@pytest.mark.slow
def test_template_white_matter_lies_in_the_simulated_white_matter(tmp_path):
    """Without tissue labels the reference region's white matter is the MNI152 template's,
    registered affinely onto the pre-bolus volume: most of it (measured 77–86 % on two
    simulated 48 × 48 × 8 heads, before the erosion) is the simulator's white matter; the
    rest is grey matter and CSF at its edge, which the erosion and the tissue mask trim."""
    from bolus.evaluate.clinical_files import template_white_matter
    from bolus.io.nifti import save_like
    from bolus.simulate.cohort import simulate_subject

    sim = simulate_subject(11, 1, "healthy", matrix=(48, 48, 8), n_timepoints=40)
    affine = sim.phantom.grid.affine_ras
    save_like(sim.signal, affine, tmp_path / "mc.nii.gz")
    labels = sim.truth["labels"]
    brain = np.isin(labels, (3, 4, 5, 6, 7))
    wm = template_white_matter(tmp_path / "mc.nii.gz", brain, affine, tmp_path) & brain
    assert wm.sum() > 0.3 * (labels == 5).sum()
    assert (wm & (labels == 5)).sum() / wm.sum() > 0.7
