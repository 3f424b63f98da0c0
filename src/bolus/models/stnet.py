"""ST-Net (Cao et al.): spatio-temporal network from 7×7×T patches + AIF + S0 → CBV, CBF, Tmax.

The paper cuts a 7×7×T patch around every brain voxel and collapses it with 3D convolutions
of kernel (3, 3, 1) into a 64×T feature sequence. Neighbouring patches overlap in 48 of
their 49 columns, so a patch-wise pass recomputes every voxel's spatial features 49 times.
Here the spatial encoder runs **fully convolutionally over whole slices**: the slice is
zero-padded by 3 voxels and three valid (3, 3, 1) convolutions and a (1, 1, 1) one, channels
1 → 8 → 16 → 32 → 64, are applied once (see :class:`SpatialEncoder`). The 64×T sequence of
voxel (i, j) is then the paper's patch encoding of the patch centred on (i, j) (with zeros
beyond the image edge, as patches there would be zero-padded). Training uses the same pass,
so training and inference agree.

With ``frame_pool`` k > 1 the curves and the AIF are first averaged over each k consecutive
frames (a remainder dropped): a fine time grid read at k times its step (the shipped recipe
reads its 1 s × 120 grid as 2 s × 60: the cost of both encoders follows the frame count).

Temporal head, per voxel, input (voxels, 66, T): the 64 spatial channels, the voxel's
baseline signal S0 (constant over time) and the AIF. A 1×1 convolution to ``width``
channels feeds a **local path** (two Conv1d k3) and a **dilated path** (Conv1d k3 with
dilations ``dilations`` = (1, 3, 8, 25), in parallel); their outputs are concatenated,
pooled over time (mean and max) and a dense head gives the normalised maps.

**Timing head.** Tmax, when it is an output (``timing``: its column), comes from a second
temporal head of the same form whose only inputs are the voxel's own (pooled) curve and the
AIF. Fed through the shared head, Tmax stays near-constant (r 0.21–0.26 against the truth,
sd 0.16–0.18 s against 2.7 s, up to 28 epochs) while CBF and CBV learn: the 64 spatial
channels and S0 carry the flow and volume and bury the one input the delay needs, the
curve's timing against the AIF's. With its own head Tmax reaches r 0.54 in ≈ 300 steps and
0.77 after 28 epochs, CBF unchanged (``benchmarks/bench_stnet_tmax.py``, README "stnet").

With ``timing_reach`` r > 0 the timing head reads, for each voxel, the mean curve of the
brain voxels of its (2r + 1)² neighbourhood (:meth:`STNet.timing_curves`) instead of its own
curve. A single DSC voxel at SNR 30 is too noisy to time: with its own curve the shipped
head read Tmax with a voxel-to-voxel sd of 1.3 s in normal tissue (truth sd 0.7 s) and the
lesion's 8–30 s at a mean of 5 s, while the 3×3 mean of the same curves, one ninth of the
noise variance, brought the lesion out (README, "stnet").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _nhwc(weight: torch.Tensor) -> torch.Tensor:
    return weight.contiguous(memory_format=torch.channels_last)


def _conv_nhwc(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a channels-last ``x``, with channels-last weights (oneDNN's fast path)."""
    return F.conv2d(x, _nhwc(conv.weight), conv.bias, conv.stride, conv.padding, conv.dilation)


def _conv1d_nhwc(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` on (n, C, 1, time) channels-last ``x``, as a (1, k) 2D convolution."""
    return F.conv2d(
        x, _nhwc(conv.weight[:, :, None]), conv.bias, 1, (0, conv.padding[0]), (1, conv.dilation[0])
    )


class SpatialEncoder(nn.Module):
    """(batch, time, x, y) → (batch, channels[-1], time, x, y); receptive field 7×7×1.

    The paper's patch encoder is three *valid* (3, 3, 1) convolutions (7×7 → 5×5 → 3×3 →
    1×1) and a (1, 1, 1) one. Run over the whole slice zero-padded by 3 voxels, the same
    valid convolutions give every voxel exactly the encoding of its 7×7 patch (zero-padded
    at the image edge). A Conv3d with kernel (3, 3, 1) never mixes time points, so it is
    computed as the equivalent 3×3 Conv2d over the time points stacked into the batch
    axis, (batch·time, C, x, y): same weights and result, and far better tuned CPU kernels.
    """

    REACH = 3  # voxels each side that reach the centre of a 7×7 patch

    def __init__(self, channels=(8, 16, 32, 64)):
        super().__init__()
        layers, c_in = [], 1
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3 if i < 3 else 1), nn.ReLU(inplace=True)]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, curves: torch.Tensor) -> torch.Tensor:
        b, t, h, w = curves.shape
        x = F.pad(curves.reshape(b * t, 1, h, w), (self.REACH,) * 4)
        x = self.net(x)  # (b·t, C, x, y): valid convolutions shrink the padding away
        return x.reshape(b, t, -1, h, w).transpose(1, 2)  # (batch, C, time, x, y)


class TemporalHead(nn.Module):
    """(voxels, c_in, time) → (voxels, n_outputs): local + dilated 1D paths, pooled, dense."""

    def __init__(self, c_in: int, n_outputs: int = 3, width: int = 32, dilations=(1, 3, 8, 25)):
        super().__init__()
        self.inlet = nn.Sequential(nn.Conv1d(c_in, width, 1), nn.ReLU(inplace=True))
        self.local = nn.Sequential(
            nn.Conv1d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        half = max(width // 2, 1)
        self.dilated = nn.ModuleList(
            nn.Sequential(nn.Conv1d(width, half, 3, padding=d, dilation=d), nn.ReLU(inplace=True))
            for d in dilations
        )
        features = 2 * (width + half * len(dilations))
        self.dense = nn.Sequential(
            nn.Linear(features, width), nn.ReLU(inplace=True), nn.Linear(width, n_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.inlet(x))

    def rest(self, x: torch.Tensor) -> torch.Tensor:
        """The head after its inlet: (voxels, width, time) → (voxels, n_outputs)."""
        paths = torch.cat([self.local(x)] + [p(x) for p in self.dilated], dim=1)
        return self.pool(paths)

    def pool(self, paths: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([paths.mean(dim=-1), paths.amax(dim=-1)], dim=1)
        return self.dense(pooled)

    def rest_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`rest` for ``x`` (voxels, width, 1, time) in channels-last layout."""
        local = self.local
        y = _conv1d_nhwc(local[2], _conv1d_nhwc(local[0], x).relu_()).relu_()
        paths = [y] + [_conv1d_nhwc(p[0], x).relu_() for p in self.dilated]
        # :meth:`pool` path by path: concatenating channels-last paths copies them, and
        # oneDNN's max pooling is ≈ 5× faster than amax over their strided time axis
        t = x.shape[-1]
        pooled = [p.permute(0, 2, 3, 1).flatten(1, 2).mean(dim=1) for p in paths]
        pooled += [F.max_pool2d(p, (1, t)).flatten(1) for p in paths]
        return self.dense(torch.cat(pooled, dim=1))


class STNet(nn.Module):
    """Input: ``curves`` (batch, time, x, y), ``s0`` (batch, x, y), ``aif`` (batch, time) and
    ``voxels`` (n, 3) long indices (slice in batch, x, y) of the voxels to predict.
    Output: (n, n_outputs) normalised maps; column ``timing`` (None: none) from the timing
    head on the voxel's curve and the AIF alone.
    """

    def __init__(
        self,
        n_timepoints: int,
        n_outputs: int = 3,
        spatial_channels=(8, 16, 32, 64),
        width: int = 32,
        dilations=(1, 3, 8, 25),
        frame_pool: int = 1,
        timing: int | None = None,
        timing_reach: int = 0,
    ):
        super().__init__()
        self.frame_pool = int(frame_pool)
        self.timing_reach = int(timing_reach)
        if self.timing_reach < 0:
            raise ValueError(f"timing_reach must be 0 or more voxels, not {timing_reach}")
        self.timing_index = None if timing is None else int(timing)
        if self.timing_index is not None and not 0 <= self.timing_index < n_outputs:
            raise ValueError(f"timing output {timing} is not one of {n_outputs} outputs")
        shared = n_outputs - (self.timing_index is not None)
        self.spatial = SpatialEncoder(spatial_channels)
        self.head = TemporalHead(self.spatial.out_channels + 2, shared, width, dilations)
        if self.timing_index is not None:
            self.timing = TemporalHead(2, 1, width, dilations)

    def _with_timing(self, shared: torch.Tensor, timing: torch.Tensor) -> torch.Tensor:
        k = self.timing_index
        return torch.cat([shared[:, :k], timing, shared[:, k:]], 1)

    def voxel_sequences(self, features, s0, aif, voxels) -> torch.Tensor:
        """(n, C + 2, time) head inputs of the chosen voxels from the slice features."""
        b, i, j = voxels[:, 0], voxels[:, 1], voxels[:, 2]
        seq = features[b, :, :, i, j]  # (n, C, time)
        t = seq.shape[-1]
        return torch.cat([seq, s0[b, i, j][:, None, None].expand(-1, 1, t), aif[b][:, None]], 1)

    def pooled(self, curves: torch.Tensor, aif: torch.Tensor):
        """(curves, aif) averaged over each ``frame_pool`` frames of their last axis but
        one (curves: (…, time, x, y)) and their last axis (aif: (…, time))."""
        k = self.frame_pool
        if k == 1:
            return curves, aif
        t = curves.shape[-3] // k * k
        curves = curves[..., :t, :, :].unflatten(-3, (t // k, k)).mean(dim=-3)
        return curves, aif[..., :t].unflatten(-1, (t // k, k)).mean(dim=-1)

    def timing_curves(self, curves: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
        """The timing head's curves (batch, time, x, y): each voxel's own, or with
        ``timing_reach`` r > 0 the mean over the (2r + 1)² neighbours ``inside`` (batch, x, y)."""
        r = self.timing_reach
        if r == 0:
            return curves
        k = 2 * r + 1
        if inside is None:  # every voxel (the image's edge still bounds the neighbourhood)
            weight = curves.new_ones(curves.shape[:-3] + curves.shape[-2:])
        else:
            weight = inside.to(curves.dtype)
        total = F.avg_pool2d(curves * weight[..., None, :, :], k, 1, r)
        count = F.avg_pool2d(weight[..., None, :, :], k, 1, r)
        return total / count.clamp_min(1e-6)

    def forward(self, curves, s0, aif, voxels, inside=None) -> torch.Tensor:
        curves, aif = self.pooled(curves, aif)
        features = self.spatial(curves)
        out = self.head(self.voxel_sequences(features, s0, aif, voxels))
        if self.timing_index is None:
            return out
        b, i, j = voxels[:, 0], voxels[:, 1], voxels[:, 2]
        timed = self.timing_curves(curves, inside)[b, :, i, j]
        return self._with_timing(out, self.timing(torch.stack([timed, aif[b]], 1)))

    @torch.inference_mode()
    def predict_slice(self, curves, s0, aif, inside, chunk: int = 1024) -> torch.Tensor:
        """Inference on every voxel of one slice where ``inside`` (x, y) bool is set:
        ``curves`` (time, x, y), ``s0`` (x, y), ``aif`` (time,) → (n, n_outputs), voxels in
        ``inside.nonzero()`` order. The same computation as :meth:`forward` with ``voxels``
        those of ``inside`` (tested), reordered so nothing is computed twice or gathered
        wide, and in the channels-last layout, where the CPU convolutions are about twice
        as fast: the head's inlet (a 1×1 convolution of the 66 channels) is split into its
        64 feature columns, applied with the spatial encoder (``width`` channels to gather
        per voxel instead of 66), and its S0 and AIF columns, added per
        voxel and per time point; the head's 1D convolutions run as (1, k) 2D ones on
        ``chunk`` voxels at a time. The encoder runs only over the box around ``inside``
        (with the voxels that reach it). The timing head's inlet (curve and AIF columns) is
        applied the same way per voxel and per time point.
        """
        curves, aif = self.pooled(curves, aif)
        n_out = self.head.dense[-1].out_features + (self.timing_index is not None)
        rows, cols = inside.any(1).nonzero()[:, 0], inside.any(0).nonzero()[:, 0]
        if rows.numel() == 0:
            return curves.new_zeros((0, n_out))
        # only the box around the voxels to predict, with the REACH voxels that reach them
        # (the padding's zeros where the box meets the image edge): the same features
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        reach = SpatialEncoder.REACH
        x = F.pad(curves[:, None], (reach,) * 4)[..., r0 : r1 + 2 * reach, c0 : c1 + 2 * reach]
        curves, s0, inside = curves[:, r0:r1, c0:c1], s0[r0:r1, c0:c1], inside[r0:r1, c0:c1]
        t, h, w = curves.shape
        inlet, c = self.head.inlet[0], self.spatial.out_channels
        weight, bias = inlet.weight[:, :, 0], inlet.bias  # (width, C + 2), (width,)
        x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.spatial.net:
            x = _conv_nhwc(layer, x) if isinstance(layer, nn.Conv2d) else layer(x)
        x = F.conv2d(x, _nhwc(weight[:, :c, None, None]))  # (time, width, x, y), x·y·width
        width = x.shape[1]
        flat = inside.reshape(-1).nonzero()[:, 0]
        x = x.permute(0, 2, 3, 1).reshape(t, h * w, width).index_select(1, flat)
        # (n, T, width) in memory, so that each chunk's head input is channels-last as it is:
        # a permuted one would be copied by every convolution that reads it
        x = x.transpose(0, 1).contiguous()
        per_time = (aif[:, None] * weight[None, :, c + 1] + bias)[None]  # (1, time, width)
        per_voxel = (s0.reshape(-1)[flat][:, None] * weight[None, :, c])[:, None]  # (n, 1, width)
        if self.timing_index is not None:
            t_inlet = self.timing.inlet[0]
            t_weight = t_inlet.weight[:, :, 0]  # (width, 2): curve, AIF
            t_per_time = (aif[:, None] * t_weight[None, :, 1] + t_inlet.bias)[None]
            timed = self.timing_curves(curves[None], inside[None])[0]
            own = timed.reshape(t, h * w).index_select(1, flat).T.contiguous()  # (n, time)
        out = []
        for at in range(0, flat.numel(), chunk):
            z = x[at : at + chunk] + per_voxel[at : at + chunk]
            z = z.add_(per_time).relu_()  # (n, time, width): the inlet's output, channels last
            shared = self.head.rest_nhwc(z[:, None].permute(0, 3, 1, 2))
            if self.timing_index is not None:
                z = own[at : at + chunk, :, None] * t_weight[None, None, :, 0]
                z = z.add_(t_per_time).relu_()
                timing = self.timing.rest_nhwc(z[:, None].permute(0, 3, 1, 2))
                shared = self._with_timing(shared, timing)
            out.append(shared)
        return torch.cat(out)
