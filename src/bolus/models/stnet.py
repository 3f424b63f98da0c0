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

Temporal head, per voxel, input (voxels, 66, T): the 64 spatial channels, the voxel's
baseline signal S0 (constant over time) and the AIF. A 1×1 convolution to ``width``
channels feeds a **local path** (two Conv1d k3) and a **dilated path** (Conv1d k3 with
dilations ``dilations`` = (1, 3, 8, 25), in parallel); their outputs are concatenated,
pooled over time (mean and max) and a dense head gives (voxels, 3) = CBV, CBF, Tmax
(normalised units).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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
        x = self.inlet(x)
        paths = torch.cat([self.local(x)] + [p(x) for p in self.dilated], dim=1)
        pooled = torch.cat([paths.mean(dim=-1), paths.amax(dim=-1)], dim=1)
        return self.dense(pooled)


class STNet(nn.Module):
    """Input: ``curves`` (batch, time, x, y), ``s0`` (batch, x, y), ``aif`` (batch, time) and
    ``voxels`` (n, 3) long indices (slice in batch, x, y) of the voxels to predict.
    Output: (n, n_outputs) normalised CBV, CBF, Tmax.
    """

    def __init__(
        self,
        n_timepoints: int,
        n_outputs: int = 3,
        spatial_channels=(8, 16, 32, 64),
        width: int = 32,
        dilations=(1, 3, 8, 25),
    ):
        super().__init__()
        self.spatial = SpatialEncoder(spatial_channels)
        self.head = TemporalHead(self.spatial.out_channels + 2, n_outputs, width, dilations)

    def voxel_sequences(self, features, s0, aif, voxels) -> torch.Tensor:
        """(n, C + 2, time) head inputs of the chosen voxels from the slice features."""
        b, i, j = voxels[:, 0], voxels[:, 1], voxels[:, 2]
        seq = features[b, :, :, i, j]  # (n, C, time)
        t = seq.shape[-1]
        return torch.cat([seq, s0[b, i, j][:, None, None].expand(-1, 1, t), aif[b][:, None]], 1)

    def forward(self, curves, s0, aif, voxels) -> torch.Tensor:
        features = self.spatial(curves)
        return self.head(self.voxel_sequences(features, s0, aif, voxels))
