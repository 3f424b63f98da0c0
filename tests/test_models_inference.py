"""The fast CPU inference paths compute what the training forward passes compute.

Each model's inference is reordered for speed (issue 8's targets on 2 CPU cores): the
Transformer's attention for 4-wide heads and one AIF sequence shared by a batch, ST-Net's
split inlet and channels-last convolutions, Talebi's channels-last temporal encoder. The
reference is the module's ordinary forward (autograd on, the nn layers PyTorch ships).
Tolerance: float32 rounding of a different summation order, relative 1e-5 of the largest
output (measured ≤ 1e-6).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bolus.config import PerfusionConstants  # noqa: E402
from bolus.learn.datasets import AIF_SCALE, CURVE_SCALE  # noqa: E402
from bolus.models import transformer as T  # noqa: E402
from bolus.models.stnet import STNet  # noqa: E402
from bolus.models.talebi import TalebiNet  # noqa: E402
from bolus.simulate.voxel_curves import simulate_on_grid  # noqa: E402

RTOL = 1e-5


def assert_same(new, ref):
    ref = ref.detach()
    scale = float(ref.abs().max())
    assert float((new - ref).abs().max()) <= RTOL * max(scale, 1.0)


@pytest.mark.parametrize("sizes", ["paper", "spec"])
@pytest.mark.parametrize("inputs", ["shared", "shared_masked", "per_row", "expanded"])
def test_transformer_inference_equals_the_layers_forward(sizes, inputs):
    torch.manual_seed(0)
    if sizes == "paper":
        model = T.build(seed=0)
    else:
        model = T.PerfusionTransformer(
            60, d_model=64, heads=16, layers=3, feedforward=128, patch=8, stride=4
        )
    model.eval()
    n, length = 40, model.config.n_samples
    tissue = torch.randn(n, length)
    aif = torch.rand(length)
    valid = None
    if inputs == "shared_masked":  # one acquisition shorter than the grid, shared by all
        valid = (torch.arange(length) < length - 13).expand(n, -1)
    elif inputs == "per_row":  # every voxel its own AIF and length: nothing shared
        aif = torch.rand(n, length)
        valid = torch.arange(length)[None] < torch.randint(length // 2, length + 1, (n, 1))
    elif inputs == "expanded":
        aif = aif.expand(n, -1).clone()
    with torch.enable_grad():  # PyTorch's layers
        ref = model(tissue, aif, valid)
    with torch.inference_mode():  # the inference path
        new = model(tissue, aif, valid)
    for key in ("residue", "local_aif", "bad_s"):
        assert_same(new[key], ref[key])


@pytest.mark.parametrize(
    "frame_pool, timing, reach",
    [(1, None, 0), (2, None, 0), (1, 2, 0), (2, 1, 0), (1, 0, 0), (1, 2, 1), (2, 1, 2)],
)
def test_stnet_slice_inference_equals_the_forward_on_every_voxel(frame_pool, timing, reach):
    """Also with the timing head giving output column ``timing`` (first, middle, last),
    reading its voxel's curve or (``reach``) the mean over its in-mask neighbours."""
    torch.manual_seed(1)
    model = STNet(31, 3, (8, 16, 32, 64), 32, (1, 3, 8, 25), frame_pool, timing, reach).eval()
    curves = torch.randn(1, 31, 17, 13)  # odd: pooled by 2, the last frame is dropped
    s0 = torch.rand(1, 17, 13) * 2
    aif = torch.rand(1, 31)
    inside = torch.rand(17, 13) > 0.3
    ij = inside.nonzero()
    voxels = torch.cat([torch.zeros(len(ij), 1, dtype=torch.long), ij], 1)
    with torch.no_grad():
        ref = model(curves, s0, aif, voxels, inside[None])
    new = model.predict_slice(curves[0], s0[0], aif[0], inside, chunk=50)  # several chunks
    assert new.shape == ref.shape == (int(inside.sum()), 3)
    assert_same(new, ref)
    # a mask inside the slice: the encoder runs on its box and the voxels reaching it
    inner = inside.clone()
    inner[:5], inner[12:], inner[:, :4], inner[:, 10:] = False, False, False, False
    ij = inner.nonzero()
    voxels = torch.cat([torch.zeros(len(ij), 1, dtype=torch.long), ij], 1)
    with torch.no_grad():
        ref = model(curves, s0, aif, voxels, inner[None])
    assert_same(model.predict_slice(curves[0], s0[0], aif[0], inner), ref)
    none = model.predict_slice(curves[0], s0[0], aif[0], torch.zeros_like(inside))
    assert none.shape == (0, 3)


def test_talebi_channels_last_inference_equals_the_forward():
    torch.manual_seed(2)
    model = TalebiNet(37, 2, (8, 16), 4, 16, 2).eval()  # odd sizes: pooling bins overlap
    curves, aif = torch.randn(3, 37, 21, 18), torch.rand(3, 37)
    with torch.no_grad():
        ref = model(curves, aif)
        fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
        new = fast(curves, aif, fast=True)
    assert_same(new, ref)


def test_pretraining_curves_are_normalised_like_model_inputs():
    """The one pre-training simulator (bolus.simulate.voxel_curves) on a cohort's grid: the
    global AIF's area on the grid is AIF_SCALE, as model_inputs normalises a subject (it
    divides by the acquired AIF's area within the grid's span; the grid's differs by the
    interpolation and the held end: median within 5 %), and the delays span the configured
    range."""
    constants = PerfusionConstants.from_config()
    grid = np.arange(60) * 1.5
    rng = np.random.default_rng(4)
    arrays = simulate_on_grid(
        rng, 600, grid, constants, curve_scale=CURVE_SCALE, aif_scale=AIF_SCALE
    )
    assert {k: v.shape for k, v in arrays.items()} == {
        "curves": (600, 60), "aif": (600, 60), "local_aif": (600, 60), "bad": (600,),
        **{m: (600,) for m in ("cbf", "cbv", "mtt", "tmax", "ttp")},
    }  # fmt: skip
    area = np.trapezoid(arrays["aif"], grid, axis=1)
    assert abs(np.median(area) / AIF_SCALE - 1) < 0.05
    assert (arrays["bad"] >= 0).all() and arrays["bad"].max() > 10.0


def test_stnet_frame_pool_reads_the_curves_at_k_times_the_step():
    """frame_pool 2 on 2·T frames is the unpooled network on the pair means (T frames)."""
    torch.manual_seed(4)
    pooled = STNet(40, 3, (4, 8, 8, 16), 8, (1, 3), frame_pool=2).eval()
    plain = STNet(20, 3, (4, 8, 8, 16), 8, (1, 3)).eval()
    plain.load_state_dict(pooled.state_dict())
    curves, s0, aif = torch.randn(2, 40, 9, 8), torch.rand(2, 9, 8), torch.rand(2, 40)
    voxels = torch.tensor([[0, 4, 4], [1, 0, 7], [1, 8, 2]])
    with torch.no_grad():
        got = pooled(curves, s0, aif, voxels)
        expected = plain(
            curves.unflatten(1, (20, 2)).mean(2), s0, aif.unflatten(1, (20, 2)).mean(2), voxels
        )
    assert_same(got, expected)


def test_stnet_timing_reach_reads_the_mean_curve_of_the_brain_neighbours():
    """timing_reach 1: each voxel's timing curve is the mean over the voxels of its 3×3
    neighbourhood that are inside the mask (fewer at the mask's edge and the image's), and
    no voxel outside the mask counts; timing_reach 0 is the voxel's own curve."""
    net = STNet(6, 3, (4, 8, 8, 16), 8, (1, 3), timing=2, timing_reach=1)
    curves, inside = torch.randn(2, 6, 5, 7), torch.rand(2, 5, 7) > 0.4
    got = net.timing_curves(curves, inside).numpy()
    c, m = curves.numpy(), inside.numpy()
    for b, i, j in np.argwhere(m):
        near = [(x, y) for x in range(i - 1, i + 2) for y in range(j - 1, j + 2)
                if 0 <= x < 5 and 0 <= y < 7 and m[b, x, y]]  # fmt: skip
        expected = np.mean([c[b, :, x, y] for x, y in near], axis=0)
        np.testing.assert_allclose(got[b, :, i, j], expected, rtol=1e-5, atol=1e-6)
    net.timing_reach = 0
    assert net.timing_curves(curves, inside) is curves
    with pytest.raises(ValueError, match="timing_reach"):
        STNet(6, 3, timing=2, timing_reach=-1)
