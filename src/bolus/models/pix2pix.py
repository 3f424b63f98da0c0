"""3D pix2pix (Kossen et al.): TOF-MRA → CBF, CBV, MTT, Tmax, TTP with a conditional GAN.

Networks
--------
:class:`UNetGenerator3D` — a 3D U-Net: ``depth`` down blocks Conv3d(k 4, s 2, p 1) →
BatchNorm (not on the first) → LeakyReLU(0.2), channels ``base·2^i`` (capped at
``8·base``); up blocks ConvTranspose3d(k 4, s 2, p 1) → BatchNorm → ReLU, each output
concatenated with the down block of the same resolution (skip connection); a last
ConvTranspose3d to the 5 maps and Tanh. Input (batch, 1, X, Y, Z), output
(batch, 5, X, Y, Z) in [−1, 1]; X, Y, Z multiples of 2^depth (:func:`pad_to_multiple`).

:class:`PatchDiscriminator3D` — a 3D PatchGAN: the TOF and the maps concatenated
(batch, 6, X, Y, Z) → Conv3d(k 4, s 2) LeakyReLU, Conv3d(k 4, s 2) BN LeakyReLU,
Conv3d(k 3, s 1) BN LeakyReLU, Conv3d(k 3, s 1) → (batch, 1, X/4, Y/4, Z/4) real/fake logits,
one per overlapping patch (receptive field 22 voxels in-plane; the stride-1 kernels are 3
rather than pix2pix's 4 so that perfusion grids of 8 slices keep a patch through-plane).

Loss (pix2pix, Isola 2017): generator BCE(D(x, G(x)), real) + λ·L1(G(x), y) over the brain
mask (λ = 100); discriminator ½·[BCE(D(x, y), real) + BCE(D(x, G(x)), fake)].

Normalisation
-------------
TOF: divided by its 99.5th percentile inside the brain mask (clipped to [0, 2]), so scanner
scaling does not matter. Targets: map m is scaled linearly from [0, hi_m] to [−1, 1] and
clipped, hi_m from the training targets (:func:`fit_scales`: 1.2 × their 99th percentile in
the brain); the scales are stored in the model (buffer ``scales``) and undone at prediction.
Volumes are zero-padded to multiples of 2^depth and the prediction cropped back.

BatchNorm uses the statistics of the volume at hand, in training and at prediction alike
(Isola et al. 2017 apply batch norm with test-batch statistics; with batches of one volume,
running averages over few subjects would be unreliable), so no running statistics are kept.

Training: :class:`bolus.learn.specs.Pix2PixSpec` through the engine of every model
(:func:`bolus.learn.train.train_model`), one :func:`training_step` per subject volume.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp")
L1_WEIGHT = 100.0


class UNetGenerator3D(nn.Module):
    """3D U-Net generator; (batch, in_channels, X, Y, Z) → (batch, out_channels, X, Y, Z)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 5, base: int = 16, depth: int = 3):
        super().__init__()
        self.depth = depth
        chans = [min(base * 2**i, 8 * base) for i in range(depth)]
        self.down = nn.ModuleList()
        c_in = in_channels
        for i, c in enumerate(chans):
            layers = [nn.Conv3d(c_in, c, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm3d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            self.down.append(nn.Sequential(*layers))
            c_in = c
        self.up = nn.ModuleList()
        for i in reversed(range(1, depth)):
            c_out = chans[i - 1]
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose3d(c_in, c_out, 4, 2, 1, bias=False),
                    nn.BatchNorm3d(c_out),
                    nn.ReLU(inplace=True),
                )
            )
            c_in = 2 * c_out  # after concatenation with the skip
        self.last = nn.Sequential(nn.ConvTranspose3d(c_in, out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck itself
        for block in self.up:
            x = torch.cat([block(x), skips.pop()], dim=1)
        return self.last(x)


class PatchDiscriminator3D(nn.Module):
    """3D PatchGAN; (batch, in_channels, X, Y, Z) → (batch, 1, x, y, z) logits."""

    def __init__(self, in_channels: int = 6, base: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(in_channels, base, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(base, 2 * base, 4, 2, 1, bias=False),
            nn.BatchNorm3d(2 * base),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(2 * base, 4 * base, 3, 1, 1, bias=False),
            nn.BatchNorm3d(4 * base),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(4 * base, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Pix2Pix3D(nn.Module):
    """Generator, discriminator and the target scales (buffer ``scales`` (5,): hi_m)."""

    def __init__(self, base: int = 16, depth: int = 3, maps=MAPS):
        super().__init__()
        self.maps = tuple(maps)
        self.depth = depth
        self.generator = UNetGenerator3D(1, len(self.maps), base, depth)
        self.discriminator = PatchDiscriminator3D(1 + len(self.maps), base)
        self.register_buffer("scales", torch.ones(len(self.maps)))
        self.sizes = {"base": base, "depth": depth}
        for module in self.modules():  # batch statistics only (module docstring)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.track_running_stats = False
                module.running_mean = module.running_var = module.num_batches_tracked = None

    def forward(self, tof: torch.Tensor) -> torch.Tensor:
        return self.generator(tof)


def build(base: int = 16, depth: int = 3, seed: int | None = None) -> Pix2Pix3D:
    if seed is not None:
        torch.manual_seed(int(seed))
    return Pix2Pix3D(base, depth)


# ----------------------------------------------------------------------------- data
def pad_to_multiple(volume: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple]:
    """Zero-pad the last three axes up to multiples of ``multiple``; returns the crop slices."""
    spatial = volume.shape[-3:]
    target = [-(-n // multiple) * multiple for n in spatial]
    pad = [(0, 0)] * (volume.ndim - 3) + [(0, t - n) for n, t in zip(spatial, target, strict=True)]
    crop = tuple(slice(0, n) for n in spatial)
    return np.pad(volume, pad), crop


def normalise_tof(tof: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """TOF / its 99.5th percentile in the mask, clipped to [0, 2]."""
    tof = np.nan_to_num(np.asarray(tof, dtype=np.float32))
    inside = tof[np.asarray(mask, bool)]
    scale = np.percentile(inside, 99.5) if inside.size else 0.0
    if not scale > 0:
        raise ValueError("the TOF image is empty inside the brain mask")
    return np.clip(tof / scale, 0.0, 2.0).astype(np.float32)


def fit_scales(targets: list[dict[str, np.ndarray]], masks: list[np.ndarray], maps=MAPS):
    """hi_m = 1.2 × the 99th percentile of map m over the training subjects' brains."""
    out = []
    for name in maps:
        values = np.concatenate(
            [np.asarray(t[name])[np.asarray(m, bool)] for t, m in zip(targets, masks, strict=True)]
        )
        values = values[np.isfinite(values)]
        out.append(max(1.2 * float(np.percentile(values, 99)), 1e-3) if values.size else 1.0)
    return np.asarray(out, np.float32)


def normalise_targets(maps: dict[str, np.ndarray], scales, names=MAPS) -> np.ndarray:
    """(5, X, Y, Z) in [−1, 1]: 0 → −1, hi_m → +1 (NaN → −1)."""
    stack = np.stack([np.nan_to_num(np.asarray(maps[n], np.float32)) for n in names])
    hi = np.asarray(scales, np.float32)[:, None, None, None]
    return np.clip(2.0 * stack / hi - 1.0, -1.0, 1.0).astype(np.float32)


def subject_tensors(tof, maps, mask, scales, depth: int):
    """One training example (padded): TOF (1, X', Y', Z'), targets (5, …), mask (1, …)."""
    multiple = 2**depth
    x, _ = pad_to_multiple(normalise_tof(tof, mask)[None], multiple)
    y, _ = pad_to_multiple(normalise_targets(maps, scales), multiple)
    m, _ = pad_to_multiple(np.asarray(mask, np.float32)[None], multiple)
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m)


# ----------------------------------------------------------------------------- training
def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _masked_l1(fake, target, mask):
    return (torch.abs(fake - target) * mask).sum() / (mask.sum() * fake.shape[1]).clamp_min(1.0)


def generator_loss(model: Pix2Pix3D, tof, target, mask, fake=None, l1_weight: float = L1_WEIGHT):
    """BCE(D(x, G(x)), real) + λ·L1 over the mask; returns (loss, parts)."""
    fake = model.generator(tof) if fake is None else fake
    adversarial = _bce(model.discriminator(torch.cat([tof, fake], 1)), True)
    l1 = _masked_l1(fake, target, mask)
    parts = {"g_adversarial": float(adversarial.detach()), "l1": float(l1.detach())}
    return adversarial + l1_weight * l1, parts


def discriminator_loss(model: Pix2Pix3D, tof, target, fake):
    """½·[BCE(D(x, y), real) + BCE(D(x, G(x)), fake)] (the fake detached)."""
    real_logits = model.discriminator(torch.cat([tof, target], 1))
    fake_logits = model.discriminator(torch.cat([tof, fake.detach()], 1))
    return 0.5 * (_bce(real_logits, True) + _bce(fake_logits, False))


def optimisers(model: Pix2Pix3D, learning_rate: float = 2e-4):
    """Adam(β1 = 0.5) for the generator and the discriminator, as in pix2pix."""
    return (
        torch.optim.Adam(model.generator.parameters(), lr=learning_rate, betas=(0.5, 0.999)),
        torch.optim.Adam(model.discriminator.parameters(), lr=learning_rate, betas=(0.5, 0.999)),
    )


def training_step(model, opt_g, opt_d, tof, target, mask, l1_weight: float = L1_WEIGHT):
    """One discriminator update, then one generator update, on a batch; returns the losses."""
    model.train()
    fake = model.generator(tof)
    d_loss = discriminator_loss(model, tof, target, fake)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    g_loss, parts = generator_loss(model, tof, target, mask, fake, l1_weight)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    parts.update(d=float(d_loss.detach()), g_total=float(g_loss.detach()))
    return parts


# ----------------------------------------------------------------------------- inference
def predict_subject(model: Pix2Pix3D, tof, mask) -> dict[str, np.ndarray]:
    """CBF (ml/100 g/min), CBV (ml/100 g), MTT, Tmax, TTP (s): (X, Y, Z) float32, 0 outside
    ``mask``. ``tof`` (X, Y, Z) is the TOF-MRA on the DSC grid."""
    mask = np.asarray(mask, bool)
    if np.shape(tof) != mask.shape:
        raise ValueError(f"TOF has shape {np.shape(tof)}, the brain mask {mask.shape}")
    x, crop = pad_to_multiple(normalise_tof(tof, mask)[None, None], 2**model.depth)
    device = model.scales.device
    model.eval()
    with torch.inference_mode():
        y = model.generator(torch.from_numpy(x).to(device))[0].float().cpu().numpy()
    y = y[(slice(None), *crop)]
    hi = model.scales.cpu().numpy()
    return {
        name: np.where(mask, (y[i] + 1.0) * 0.5 * hi[i], 0.0).astype(np.float32)
        for i, name in enumerate(model.maps)
    }
