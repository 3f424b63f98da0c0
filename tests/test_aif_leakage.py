"""Leakage correction (Boxerman–Weisskoff), AIF by cluster analysis (Mouridsen), VOF scaling.

All on simulated subjects whose truth is known: the simulator's optional tumour contrast
leakage and partial-volume arteries (both off in the default cohort).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bolus.perfusion.aif import select_aif
from bolus.perfusion.concentration import concentration_from_signal
from bolus.perfusion.leakage import boxerman_weisskoff, cumulative_integral
from bolus.simulate.phantom import ARTERY, GM, TUMOUR, WM


def _subject(seed, number, pathology, **options):
    from bolus.simulate.cohort import simulate_subject

    sim = simulate_subject(seed, number, pathology, matrix=(64, 64, 10), **options)
    search = sim.truth["labels"] >= 3  # intracranial: vessels included, like the brain mask
    conc, _ = concentration_from_signal(sim.signal, sim.te_s, sim.time_s, mask=search)
    return sim, search, conc


# ----------------------------------------------------------------------------- leakage
def test_the_fit_recovers_k1_and_k2_exactly_on_model_curves():
    """Curves built from the model itself (K1·ref − K2·∫ref) give back K1 and K2 to rounding,
    for T1 (K2 > 0) and T2* (K2 < 0) leakage alike, and the corrected curve is K1·ref."""
    times = np.arange(50) * 1.5
    ref = np.where(times > 15, (times - 15) ** 3 * np.exp(-(times - 15) / 1.6), 0.0)
    ref /= ref.max()
    integral = cumulative_integral(ref, times)
    k1 = np.array([0.5, 1.0, 2.0, 1.5])
    k2 = np.array([0.0, 0.01, -0.02, 0.03])
    conc = (k1[:, None] * ref - k2[:, None] * integral)[:, None, None, :]
    result = boxerman_weisskoff(conc, times, np.ones((4, 1, 1), bool), reference=ref, min_t=0)
    np.testing.assert_allclose(result.k1[:, 0, 0], k1, atol=1e-6)
    np.testing.assert_allclose(result.k2[:, 0, 0], k2, atol=1e-7)
    np.testing.assert_allclose(result.corrected[:, 0, 0], k1[:, None] * ref, atol=1e-6)


@pytest.fixture(scope="module")
def leaky_tumour():
    """The same tumour subject without and with T1-dominated leakage (k2 = 1e-3 /s: its CBV
    from the raw curves falls to ≈ 0.55 of the truth), 60 frames (90 s)."""
    clean = _subject(11, 3, "tumour")
    leaky = _subject(11, 3, "tumour", tumour_leakage_per_s=1e-3)
    return clean, leaky


def _cbv(sim, search, conc, aif_curve):
    from bolus.perfusion.maps import perfusion_maps

    return perfusion_maps(conc, sim.time_s, aif_curve, "osvd", mask=search)["cbv"]


def test_leakage_correction_recovers_tumour_cbv(leaky_tumour):
    """T1 leakage lowers the tumour's apparent ΔR2* (signal raised) and so its CBV; the
    corrected curves bring the median tumour CBV/truth from 0.55 back to 0.91 (measured; the
    rest is the reference's shape differing from the tumour's own, short-MTT curves, and the
    oSVD bias). Required: from below 0.65 to at least 0.85, with positive K2 in the tumour
    (T1 leakage) and the tumour kept out of the non-enhancing reference."""
    sim, search, conc = leaky_tumour[1]
    aif = select_aif(conc, sim.time_s, search)
    result = boxerman_weisskoff(conc, sim.time_s, search)
    tumour = sim.truth["labels"] == TUMOUR
    truth = sim.truth["cbv"][tumour]
    raw = np.median(_cbv(sim, search, conc, aif.curve)[tumour] / truth)
    corrected = np.median(_cbv(sim, search, result.corrected, aif.curve)[tumour] / truth)
    assert raw < 0.65, raw
    assert corrected >= 0.85, corrected
    assert np.median(result.k2[tumour]) > 0
    # the reference is non-enhancing brain: (almost) no tumour voxel in it
    assert (result.reference_mask & tumour).sum() <= 0.5 * tumour.sum()
    assert result.k2.dtype == np.float32 and np.all(result.k2[~search] == 0)


def test_leakage_correction_does_not_degrade_leak_free_cbv(leaky_tumour):
    """On the same subject without leakage, the correction must not make CBV worse: the brain
    CBV NRMSE against the truth must not rise (measured: 0.27 → 0.12; the fitted K2·∫ref term
    also absorbs baseline-offset errors of noisy curves, which inflate the raw areas), the
    median tumour and grey-matter CBV/truth must stay within 0.05 of their uncorrected values
    (measured: tumour 0.976 → 0.933, GM 0.980 → 1.001: the tolerance is what a residual
    shape mismatch between a voxel and the reference costs, ≈ 5 %). White matter moves more
    (0.976 → 0.882):
    its curves are broader than the GM-dominated reference, which the model reads as a small
    negative K2 — Boxerman–Weisskoff's known transit-time sensitivity, hence off by default."""
    sim, search, conc = leaky_tumour[0]
    aif = select_aif(conc, sim.time_s, search)
    result = boxerman_weisskoff(conc, sim.time_s, search)
    labels = sim.truth["labels"]
    brain = sim.truth["brain"] > 0
    truth = sim.truth["cbv"]
    raw = _cbv(sim, search, conc, aif.curve)
    corrected = _cbv(sim, search, result.corrected, aif.curve)

    def nrmse(cbv):
        return np.linalg.norm(cbv[brain] - truth[brain]) / np.linalg.norm(truth[brain])

    assert nrmse(corrected) <= nrmse(raw)
    for label in (TUMOUR, GM):
        m = labels == label
        before, after = np.median(raw[m] / truth[m]), np.median(corrected[m] / truth[m])
        assert abs(after - before) <= 0.05, (label, before, after)
    assert np.median(corrected[labels == WM] / truth[labels == WM]) >= 0.8


def test_a_significance_gate_leaves_noise_alone(leaky_tumour):
    """With ``min_t`` = 3 only K2 three standard errors from 0 is applied: on leak-free data
    most brain curves stay exactly as measured, while the leaky tumour is still corrected."""
    sim, search, conc = leaky_tumour[0]
    gated = boxerman_weisskoff(conc, sim.time_s, search, min_t=3.0)
    brain = sim.truth["brain"] > 0
    unchanged = np.all(gated.corrected[brain] == conc[brain], axis=-1)
    assert unchanged.mean() > 0.5
    sim, search, conc = leaky_tumour[1]
    gated = boxerman_weisskoff(conc, sim.time_s, search, min_t=3.0)
    tumour = sim.truth["labels"] == TUMOUR
    changed = np.any(gated.corrected[tumour] != conc[tumour], axis=-1)
    assert changed.mean() > 0.8


# ----------------------------------------------------------------------------- AIF
@pytest.mark.parametrize(
    "pathology, fraction",
    [("stroke", None), ("healthy", (0.2, 0.9)), ("tumour", (0.3, 0.6))],
)
def test_cluster_aif_follows_the_true_arterial_curve(pathology, fraction):
    """Mouridsen-style clustering: r ≥ 0.95 with the true arterial ΔR2* and the peak within
    one frame (issue 3), on pure arteries and on partial-volume arteries (each artery voxel
    holds a fraction f of blood, the rest grey matter; signals mix, so the curve is truncated
    at its peak and carries a tissue tail). Measured on four subjects
    (benchmarks/bench_aif_leakage.py --aif): r 0.9991–0.9998 pure, 0.9928–0.9962 for f in
    0.2–0.9, 0.962–0.976 for f in 0.3–0.6 (no pure voxel left); peak frame within one.
    With f in 0.2–0.9 the cluster kept rejects partial volume: its mean f (measured
    0.82–0.86) is well above the artery voxels' mean (≈ 0.55). With f in 0.3–0.6 it does
    not (0.38–0.56): the least-blood voxels saturate least and so have the narrowest,
    earliest shape, which the first-moment criterion prefers; only r and the peak are
    required there."""
    sim, search, conc = _subject(11, 2, pathology, n_timepoints=50, artery_blood_fraction=fraction)
    aif = select_aif(conc, sim.time_s, search, method="cluster")
    truth = np.asarray(sim.aif_delta_r2s)
    assert aif.method == "cluster"
    assert np.corrcoef(aif.curve, truth)[0, 1] >= 0.95
    assert abs(int(np.argmax(aif.curve)) - int(np.argmax(truth))) <= 1
    labels = sim.truth["labels"]
    assert np.mean(labels[aif.voxel_mask] == ARTERY) >= 0.8
    if fraction == (0.2, 0.9):
        f = sim.artery_fraction
        assert f[aif.voxel_mask].mean() > f[labels == ARTERY].mean() + 0.15


def test_vof_scaling_matches_the_aif_area_to_the_vein():
    """Partial-volume arteries (f 0.2–0.9) shrink the AIF's area to ≈ 0.73 of the truth;
    scaling it to the VOF's area brings it to the vein's (the simulator's sinus carries
    VOF_AREA_RATIO = 1.15 times the arterial area, so 1.15 is the best VOF scaling can do:
    measured 1.17–1.19, i.e. CBV and CBF errors of −15 % instead of +37 %). On pure
    arteries the same scaling costs those 15 %, which is why the default, ``auto``, scales
    only when ∫VOF/∫AIF > 1.5 (here ≈ 1.6; pure arteries ≈ 1.15: left alone, next test).
    The shape is unchanged, and the VOF is written to aif.tsv as a column ``vof``."""
    from bolus.perfusion.aif import aif_table
    from bolus.simulate.phantom import VOF_AREA_RATIO

    sim, search, conc = _subject(
        11, 1, "healthy", n_timepoints=50, artery_blood_fraction=(0.2, 0.9)
    )
    truth = np.asarray(sim.aif_delta_r2s)
    plain = select_aif(conc, sim.time_s, search, vof_scaling=False)
    scaled = select_aif(conc, sim.time_s, search, vof_scaling=True)
    area = np.trapezoid(truth, sim.time_s)
    plain_ratio = np.trapezoid(plain.curve, sim.time_s) / area
    scaled_ratio = np.trapezoid(scaled.curve, sim.time_s) / area
    assert plain_ratio < 0.85
    assert abs(scaled_ratio - VOF_AREA_RATIO) < 0.1
    assert abs(scaled_ratio - 1) < abs(plain_ratio - 1)
    assert scaled.vof_scale == pytest.approx(scaled_ratio / plain_ratio, rel=1e-9)
    np.testing.assert_allclose(scaled.curve, plain.curve * scaled.vof_scale)
    auto = select_aif(conc, sim.time_s, search, vof_scaling="auto")
    assert auto.vof_scale == scaled.vof_scale > 1.5
    np.testing.assert_array_equal(auto.curve, scaled.curve)
    table = aif_table(scaled)
    assert list(table.columns) == ["time", "concentration", "vof"]
    assert isinstance(table, pd.DataFrame)
    # the VOF is the late sinus: peaks after the AIF
    assert np.argmax(scaled.vof_curve) > np.argmax(scaled.curve)


def test_unknown_aif_method_is_refused():
    conc = np.zeros((2, 2, 1, 10))
    with pytest.raises(ValueError, match="unknown AIF method"):
        select_aif(conc, np.arange(10.0), np.ones((2, 2, 1), bool), method="magic")


def test_perfusion_stage_writes_k2_and_the_vof(tmp_path):
    """The perfusion stage with ``concentration.leakage_correction`` and ``aif.method:
    cluster``: a K2 map (1/s, positive in the leaky tumour on average), the corrected
    concentration saved (so ``bolus maps`` on it reproduces the maps), and aif.tsv with the
    extra column ``vof``."""
    import json

    import nibabel as nib

    from bolus import paths
    from bolus.io.nifti import save_like
    from bolus.simulate.cohort import simulate_subject
    from bolus.stages import perfusion_and_maps

    sim = simulate_subject(
        11, 3, "tumour", matrix=(48, 48, 8), n_timepoints=50, tumour_leakage_per_s=1e-3
    )
    sp = paths.SubjectPaths(tmp_path, "sub-01")
    affine = sim.phantom.grid.affine_ras
    save_like(sim.signal, affine, sp.mc_dsc)
    sp.dsc_json.write_text(json.dumps({"VolumeTiming": sim.time_s.tolist(), "EchoTime": sim.te_s}))
    save_like(sim.truth["labels"] >= 3, affine, sp.brain_mask, dtype=np.uint8)
    config = {
        "participants": "x",
        "svd": {"methods": ["osvd"]},
        "concentration": {"leakage_correction": True},
        "aif": {"method": "cluster"},
    }
    perfusion_and_maps(sp, config)
    assert sp.leakage_k2.name == "sub-01_desc-leakage_k2.nii.gz"
    k2 = nib.load(sp.leakage_k2).get_fdata()
    tumour = sim.truth["labels"] == TUMOUR
    if tumour.any():
        assert np.median(k2[tumour]) > 0
    table = pd.read_csv(sp.aif_tsv, sep="\t")
    assert list(table.columns) == ["time", "concentration", "vof"]
    assert np.argmax(table["vof"].to_numpy()) > np.argmax(table["concentration"].to_numpy())
    # the saved concentration is the corrected one: not the raw ΔR2* in the tumour
    raw, _ = concentration_from_signal(
        sim.signal, sim.te_s, sim.time_s, mask=sim.truth["labels"] >= 3
    )
    saved = nib.load(sp.conc).get_fdata()
    assert not np.allclose(saved[tumour], raw[tumour], atol=1e-3)


def test_aif_figure_marks_the_vof(tmp_path):
    """The AIF QC figure takes the VOF (aif.tsv column ``vof``) and draws it beside the AIF."""
    from bolus.evaluate.figures import aif_figure

    times = np.arange(40) * 1.5
    aif = np.exp(-0.5 * ((times - 20) / 3) ** 2)
    vof = 1.1 * np.exp(-0.5 * ((times - 27) / 5) ** 2)
    out = aif_figure(tmp_path / "aif.png", times, aif, vof=vof)
    assert out.exists() and out.read_bytes()[:4] == b"\x89PNG"


def test_automatic_vof_scaling_leaves_pure_arteries_alone():
    """``vof_scaling="auto"`` (the default): on pure arteries the VOF's area is the
    simulator's VOF_AREA_RATIO (1.15) times the AIF's, below the 1.5 that marks partial
    volume, so the AIF is the unscaled one (area within 5 % of the truth: measured 1.01–1.03
    by ``benchmarks/bench_aif_leakage.py --aif``), where forced scaling gives 1.17–1.19."""
    sim, search, conc = _subject(11, 1, "healthy", n_timepoints=50)
    truth_area = np.trapezoid(np.asarray(sim.aif_delta_r2s), sim.time_s)
    plain = select_aif(conc, sim.time_s, search, vof_scaling=False)
    auto = select_aif(conc, sim.time_s, search)
    forced = select_aif(conc, sim.time_s, search, vof_scaling=True)
    assert 1.0 < forced.vof_scale < 1.5
    assert auto.vof_scale == 1.0
    np.testing.assert_array_equal(auto.curve, plain.curve)
    assert np.trapezoid(auto.curve, sim.time_s) / truth_area == pytest.approx(1.0, abs=0.05)
    numpy_true = select_aif(conc, sim.time_s, search, vof_scaling=np.bool_(True))
    assert numpy_true.vof_scale == forced.vof_scale  # a numpy boolean is not taken for auto
    with pytest.raises(ValueError, match="vof_scaling"):
        select_aif(conc, sim.time_s, search, vof_scaling="sometimes")


@pytest.mark.parametrize("seed,number", [(9, 1), (10, 2), (11, 3)])
def test_aif_of_a_moving_head_is_arterial_and_scaled_to_the_vein(seed, number):
    """A 2 mm drift on 4.6 mm voxels (48×48×8, the motion cases of
    ``test_preprocess_accuracy``), corrected with the true motion (the best rigid correction
    can do): moving one-voxel arteries lose ≈ 30–60 % of their area to partial volume, and
    the edge voxels of CSF and the sinus gain large false curves that peak late. The AIF is
    still arterial in shape (r ≥ 0.95 with the true curve, peak within one frame: the issue-3
    criterion) because the candidates are the largest curves among those peaking no later
    than the median (before, seed 10 took the sinus: peak 5 frames late), and
    ``vof_scaling: auto`` restores its area to within 25 % of the truth: the VOF is the
    sinus because false CSF-edge curves, which ramp up and stay, are not taken for a vein
    (before, seed 10's VOF was 8 such voxels and its area 1.35× the true AIF's; the VOF's
    own area is 1.15–1.19× the AIF's; measured 1.11–1.18)."""
    from bolus.simulate.cohort import simulate_subject
    from bolus.simulate.phantom import undo_motion

    sim = simulate_subject(
        seed, number, "stroke", matrix=(48, 48, 8), n_timepoints=40, motion_mm=2.0
    )
    search = sim.truth["labels"] >= 3
    corrected = undo_motion(sim.signal, sim.phantom.grid, sim.motion)
    conc, _ = concentration_from_signal(corrected, sim.te_s, sim.time_s, mask=search)
    truth = np.asarray(sim.aif_delta_r2s)
    aif = select_aif(conc, sim.time_s, search)
    assert np.corrcoef(aif.curve, truth)[0, 1] >= 0.95
    assert abs(int(np.argmax(aif.curve)) - int(np.argmax(truth))) <= 1
    assert aif.vof_scale > 1.5
    area = np.trapezoid(aif.curve, sim.time_s) / np.trapezoid(truth, sim.time_s)
    assert 0.8 <= area <= 1.25, area
