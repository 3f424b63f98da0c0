"""3D pix2pix (Kossen et al.): TOF-MRA → perfusion maps; shapes, scaling, training."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bolus.models import pix2pix as P  # noqa: E402


def _example(shape=(20, 18, 7), seed=0):
    """A TOF-like volume and maps that depend on it (bright tubes, lower values around them)."""
    rng = np.random.default_rng(seed)
    tof = 100 + 10 * rng.random(shape).astype(np.float32)
    tof[5:15, 9, :] = 900.0
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-2, 1:-1] = True
    base = np.where(mask, 1.0, 0.0).astype(np.float32)
    maps = {"cbf": 50 * base, "cbv": 4 * base, "mtt": 5 * base, "tmax": 2 * base, "ttp": 30 * base}
    maps["cbf"][:, 9:, :] *= 0.4  # a deficit on one side
    return tof, maps, mask


def test_documented_shapes_with_padding_and_cropping():
    model = P.build(seed=0)
    x = torch.rand(2, 1, 32, 24, 16)
    with torch.no_grad():
        y = model(x)
        logits = model.discriminator(torch.cat([x, y], 1))
    assert y.shape == (2, 5, 32, 24, 16)
    assert float(y.abs().max()) <= 1.0  # Tanh
    assert logits.shape == (2, 1, 8, 6, 4)  # one verdict per patch
    tof, _, mask = _example()  # 20 × 18 × 7: padded to 24 × 24 × 8 and cropped back
    maps = P.predict_subject(model, tof, mask)
    assert set(maps) == set(P.MAPS)
    for v in maps.values():
        assert v.shape == tof.shape and v.dtype == np.float32
        assert np.all(v[~mask] == 0) and np.all(v[mask] >= 0)


def test_target_scaling_round_trip():
    _, maps, mask = _example()
    scales = P.fit_scales([maps], [mask])
    np.testing.assert_allclose(scales[0], 1.2 * 50, rtol=1e-6)  # 1.2 × 99th percentile
    y = P.normalise_targets(maps, scales)
    assert y.shape == (5,) + mask.shape and y.min() >= -1 and y.max() <= 1
    back = (y + 1) * 0.5 * scales[:, None, None, None]
    for i, name in enumerate(P.MAPS):
        np.testing.assert_allclose(back[i], maps[name], atol=1e-4)


def test_one_generator_step_reduces_the_generator_loss():
    torch.manual_seed(0)
    model = P.build(base=8, depth=3, seed=0)
    tof, maps, mask = _example()
    x, y, m = (v[None] for v in P.subject_tensors(tof, maps, mask, P.fit_scales([maps], [mask]), 3))
    opt_g, _ = P.optimisers(model)
    model.train()
    before, _ = P.generator_loss(model, x, y, m)
    opt_g.zero_grad()
    before.backward()
    opt_g.step()
    with torch.no_grad():
        after, _ = P.generator_loss(model, x, y, m)
    assert float(after) < float(before.detach())
