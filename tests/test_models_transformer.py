"""The voxel-wise perfusion Transformer (Zeng et al. 2025): shapes, physics, training."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bolus.config import PerfusionConstants  # noqa: E402
from bolus.models import transformer as T  # noqa: E402
from bolus.simulate.voxel_curves import FINE_DT_S, simulate_voxel_curves  # noqa: E402

CONSTANTS = PerfusionConstants.from_config()


def test_documented_shapes():
    model = T.build(seed=0)
    cfg = model.config
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers) == (64, 16, 3)
    out = model(torch.randn(5, 96), torch.randn(96), torch.ones(5, 96, dtype=torch.bool))
    assert out["residue"].shape == (5, 96)
    assert out["local_aif"].shape == (5, 96)
    assert out["bad_s"].shape == (5,)
    # the sizes a training spec passes: any number of frames, patch = kernel, stride
    spec_model = T.PerfusionTransformer(
        60, d_model=64, heads=16, layers=3, feedforward=128, patch=6, stride=3
    )
    out = spec_model(torch.randn(3, 60), torch.randn(3, 60))
    assert out["residue"].shape == (3, 60) and out["bad"].shape == (3,)


def test_residue_is_non_negative_and_monotonically_non_increasing():
    model = T.build(seed=1)
    out = model(torch.randn(64, 96) * 3, torch.rand(96), torch.rand(64, 96) > 0.2)
    r = out["residue"].detach()
    assert (r >= 0).all()
    assert (torch.diff(r, dim=-1) <= 0).all()


def test_reconstruction_is_the_simulators_tissue_curve():
    # the physics the loss relies on: Δt·(local AIF ⊛ (ρ/k_H)·F·R) on the model grid is the
    # simulator's tissue curve (computed on a 0.25 s grid). The 1 s rectangle rule (residue
    # at mid-frame) keeps the area (≤ 3 %: the convolution conserves it) but blurs the
    # peak of sharp boli: measured median 6 %, at most 16 % of the peak.
    cfg = T.TransformerConfig()
    sim = simulate_voxel_curves(np.random.default_rng(3), 200, CONSTANTS)
    grid = T.model_grid(cfg)
    idx = np.rint(grid / FINE_DT_S).astype(int)
    local = torch.from_numpy(sim.fine_local_aif[:, idx])
    residue = torch.from_numpy(sim.flow_residue(grid + cfg.dt_s / 2, CONSTANTS))
    fit = T.reconstruct(local, residue, cfg.dt_s).numpy()
    truth = sim.fine_tissue[:, idx]
    peak = truth.max(axis=1)
    error = np.abs(fit - truth).max(axis=1) / peak
    assert np.median(error) < 0.08 and error.max() < 0.2
    np.testing.assert_allclose(fit.sum(axis=1), truth.sum(axis=1), rtol=0.03)


def test_maps_from_a_known_residue():
    cfg = T.TransformerConfig()
    t = torch.from_numpy(T.model_grid(cfg)).float()
    cbf, mtt = 50.0, 4.0  # ml/100 g/min, s: CBV = 3.33 ml/100 g
    flow = cbf / 6000.0 * CONSTANTS.density_g_ml / CONSTANTS.kh
    residue = (flow * torch.exp(-(t + 0.5) / mtt))[None]  # midpoint samples: Σ r·Δt = F·MTT
    maps = T.maps_from_outputs({"residue": residue, "bad_s": torch.tensor([2.5])}, cfg, CONSTANTS)
    # max r is R at 0.5 s: exp(−0.5/4) of CBF
    assert maps["cbf"].item() == pytest.approx(cbf * np.exp(-0.5 / mtt), rel=1e-4)
    # midpoint rule: Σ exp(−(k + ½)Δt/MTT)·Δt = MTT·(1 − (Δt/MTT)²/24 + …), 0.26 % low here
    assert maps["cbv"].item() == pytest.approx(cbf * mtt / 60.0, rel=4e-3)
    assert maps["mtt"].item() == pytest.approx(60 * maps["cbv"].item() / maps["cbf"].item())
    assert maps["tmax"].item() == pytest.approx(2.5)  # argmax of a monotone residue is 0


def test_inputs_are_unit_free_and_variable_length_is_masked():
    cfg = T.TransformerConfig()
    times = np.arange(40) * 1.7  # 66.3 s: the 96 s grid is padded
    tissue = np.random.default_rng(0).random((7, 40))
    aif = np.sin(np.linspace(0, 3, 40)) ** 2 + 0.1
    x, a, valid, _ = T.prepare_curves(tissue, aif, times, cfg)
    assert valid.shape == (7, 96) and valid[0].sum() == 67  # 0 … 66 s
    assert np.all(x[:, 67:] == 0)
    np.testing.assert_allclose(x[:, 17] * aif.max() * T.TISSUE_SCALE, tissue[:, 10], rtol=1e-5)
    # ΔR2* or HU: scaling tissue and AIF alike changes nothing
    x2, a2, _, _ = T.prepare_curves(37.0 * tissue, 37.0 * aif, times, cfg)
    np.testing.assert_allclose(x2, x, rtol=1e-5)
    np.testing.assert_allclose(a2, a, rtol=1e-5)


def test_predict_subject_maps_every_masked_voxel():
    sim = simulate_voxel_curves(np.random.default_rng(5), 60, CONSTANTS)
    times = np.arange(50) * 1.5
    tissue, _, _ = sim.sample_on(times, np.random.default_rng(0))
    aif = sim.sample_on(times, np.random.default_rng(0))[1][0]
    conc = tissue.reshape(5, 4, 3, 50)
    mask = np.ones((5, 4, 3), bool)
    mask[0] = False
    maps = T.predict_subject(T.build(seed=0), conc, times, aif, mask, batch_size=16)
    assert set(maps) == {"cbf", "cbv", "mtt", "tmax"}
    for v in maps.values():
        assert v.shape == (5, 4, 3) and v.dtype == np.float32 and np.isfinite(v).all()
        assert np.all(v[0] == 0)
    with pytest.raises(ValueError, match="mask"):
        T.predict_subject(T.build(seed=0), conc, times, aif, mask[:4])
