"""Talebi et al. 2024: a temporal CNN per voxel feeding a 2D U-Net per slice → CBV, CBF.

Architecture (sizes are constructor arguments):

1. temporal encoder, shared by every voxel: the voxel's curve and the AIF as two channels,
   (voxels, 2, time) → Conv1d(k5) → ReLU → MaxPool(2) → Conv1d(k5) → ReLU →
   AdaptiveAvgPool(``temporal_length``) → (voxels, C·L) features;
2. the features are reshaped into the channels of an image, (batch, C·L, x, y), and a 2D
   U-Net (``depth`` levels, ``base_channels`` doubling per level, max-pool down,
   transposed-conv up, skip concatenation) maps it to (batch, base, x, y);
3. two conv layers (3×3, then 1×1) give the maps (batch, n_outputs, x, y).

``talebi_truncated`` is the same network fed the first 40 frames. Deviation from the paper:
the AIF enters as a second channel of the temporal encoder (our cohort mixes AIFs and
sites, and CBF is not identifiable from the tissue curve alone).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet2D(nn.Module):
    """(batch, c_in, x, y) → (batch, base_channels, x, y); any x, y (padded internally)."""

    def __init__(self, c_in: int, base_channels: int = 16, depth: int = 2):
        super().__init__()
        self.depth = depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c = c_in
        for w in widths:
            self.down.append(_block(c, w))
            c = w
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w_hi, w_lo in zip(widths[::-1][:-1], widths[::-1][1:], strict=True):
            self.up.append(nn.ConvTranspose2d(w_hi, w_lo, 2, stride=2))
            self.merge.append(_block(2 * w_lo, w_lo))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m))
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, merge, skip in zip(self.up, self.merge, skips[::-1], strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return x[..., :h, :w]


class TalebiNet(nn.Module):
    """Input: ``curves`` (batch, time, x, y), ``aif`` (batch, time).
    Output: (batch, n_outputs, x, y) normalised maps (CBF, CBV)."""

    def __init__(
        self,
        n_timepoints: int,
        n_outputs: int = 2,
        temporal_channels=(8, 16),
        temporal_length: int = 4,
        base_channels: int = 16,
        depth: int = 2,
    ):
        super().__init__()
        c1, c2 = temporal_channels
        self.n_timepoints = n_timepoints
        self.temporal = nn.Sequential(
            nn.Conv1d(2, c1, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(2),
            nn.Conv1d(c1, c2, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool1d(temporal_length),
        )
        self.unet = UNet2D(c2 * temporal_length, base_channels, depth)
        self.head = nn.Sequential(
            nn.Conv2d(base_channels, base_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(base_channels, n_outputs, 1),
        )

    def forward(self, curves: torch.Tensor, aif: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """``fast`` (inference only): the temporal encoder through :func:`_temporal_nhwc`,
        the same computation in the channels-last layout the CPU convolutions prefer (the
        U-Net too is fastest with the module in ``torch.channels_last``)."""
        b, t, h, w = curves.shape
        voxels = curves.permute(0, 2, 3, 1).reshape(b * h * w, 1, t)
        arterial = aif[:, None, None, :].expand(b, h, w, t).reshape(b * h * w, 1, t)
        temporal = _temporal_nhwc if fast else (lambda _, x: self.temporal(x))
        features = temporal(self.temporal, torch.cat([voxels, arterial], dim=1))  # (b·h·w, C, L)
        image = features.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.head(self.unet(image))


def _temporal_nhwc(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``seq(x)`` for the temporal encoder (conv, ReLU, max-pool 2, conv, ReLU, adaptive
    average pool) on (voxels, 2, time): the 1D convolutions as (1, k) 2D ones on the
    channels-last (voxels, C, 1, time), the max-pool on pairs of frames in that layout, the
    adaptive pool as the product with its averaging matrix (PyTorch's bins:
    [⌊i·n/L⌋, ⌈(i + 1)·n/L⌉))."""
    conv1, conv2, length = seq[0], seq[3], seq[5].output_size
    x = x[:, :, None].contiguous(memory_format=torch.channels_last)
    for i, conv in enumerate((conv1, conv2)):
        weight = conv.weight[:, :, None].contiguous(memory_format=torch.channels_last)
        x = F.conv2d(x, weight, conv.bias, 1, (0, conv.padding[0])).relu_()
        if i == 0:  # max-pool 2: the larger of adjacent frames (an odd last frame dropped)
            frames = x.permute(0, 2, 3, 1)[:, 0, : x.shape[-1] // 2 * 2]  # (voxels, time, C)
            frames = frames.reshape(x.shape[0], -1, 2, x.shape[1])
            x = torch.maximum(frames[:, :, 0], frames[:, :, 1]).permute(0, 2, 1)[:, :, None]
    n = x.shape[-1]
    average = x.new_zeros(n, length)
    for i in range(length):
        start, stop = (i * n) // length, -(-((i + 1) * n) // length)
        average[start:stop, i] = 1.0 / (stop - start)
    return torch.matmul(x[:, :, 0], average)
