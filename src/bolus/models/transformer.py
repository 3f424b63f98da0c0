"""Voxel-wise perfusion Transformer (Zeng et al. 2025): tissue curve + global AIF → local AIF,
flow-scaled residue function and bolus arrival delay → CBF, CBV, MTT, Tmax.

Network (:class:`PerfusionTransformer`)
---------------------------------------
* Encoder: the tissue curve (with its validity mask as a second channel) is cut into 16
  tokens by a 1D convolution (kernel 8, stride ``patch`` = 6 samples; "conv projection"), plus a fixed
  sinusoidal positional encoding and a learnable temporal embedding per token; 3 pre-norm
  Transformer encoder layers (d_model 64, 16 heads, feed-forward 128).
* Decoder: the global AIF, tokenised the same way (own projection and embeddings), attends
  to itself and to the encoded tissue curve: 3 Transformer decoder layers (no causal mask:
  the whole curve is known).
* Heads on the decoder tokens: the local AIF (``patch`` samples per token), the flow-scaled
  residue r(t) = (ρ/k_H)·F·R(t) in 1/s (Softplus, then sorted in descending order along
  time so it is monotonically non-increasing; the sort's permutation passes the gradient),
  and the bolus arrival delay (BAD, s; Softplus, so ≥ 0 like the SVD methods' Tmax) from
  the masked mean of the tokens.

Shapes: inputs ``tissue`` (batch, L), ``aif`` (batch, L) or (L,), ``valid`` (batch, L) bool,
with L = ``n_samples`` on the model grid; outputs ``residue`` (batch, L) 1/s,
``local_aif`` (batch, L) (in units of the global AIF's peak), ``bad_s`` (batch,).

Model grid, variable temporal resolution and length
---------------------------------------------------
Every acquisition is resampled (linear interpolation) onto a fixed grid of ``n_samples``
(96) samples every ``dt_s`` (1 s) starting at its first frame. A shorter acquisition is
padded with zeros and a mask (``valid``), given to the network as a second input channel
of the conv projection (so padded tokens are known as such; attention runs unmasked over
the fixed number of tokens, which keeps it on PyTorch's fused path) and ignored by the
losses. The training engine's curves hold their end value instead (the layout every model
shares); :func:`acquired` reads the held end back as invalid, so the network sees the same
zeros and mask, and a curve still raised when a short acquisition stops is not read as a
residue that never decays. Frames after 96 s are dropped (every bolus of interest
has passed by then; the simulator's longest delays reach 55 s + the first pass).

Normalisation (DSC ΔR2* and CT HU alike)
----------------------------------------
Tissue and AIF are divided by the global AIF's peak: the ratio is independent of dose,
relaxivity and units. The tissue curve is further divided by :data:`TISSUE_SCALE` so a
grey-matter curve has a peak of about 1; the residue is produced in units of
:data:`RESIDUE_SCALE` (1/s) and BAD in units of :data:`BAD_SCALE_S`.

Physics of the outputs
----------------------
The reconstructed tissue curve is ĉ(t_i) = Δt·Σ_j a_loc(t_{i−j})·r(t_j) (same rectangle rule
as the pipeline's deconvolution). With the :class:`~bolus.config.PerfusionConstants`:
CBF = cbf_scale·max r (ml/100 g/min), CBV = cbv_scale·Σ r·Δt (ml/100 g), MTT = 60·CBV/CBF
(s), Tmax = Δt·argmax r + BAD (s); the residue is monotone, so argmax r = 0 and Tmax = BAD.

BAD is trained against the *effective* arrival delay δ + argmax(h_β ⊗ R) of the truth maps
(the peak of the residue seen through the global AIF, Calamante 2000): equal to the local
AIF's delay δ without dispersion, and what Tmax means in this project (README, "Units and
conventions").

Training
--------
In the workflow and ``bolus pretrain``, through the engine of every model
(:func:`bolus.learn.train.train_model` with :class:`bolus.learn.specs.TransformerSpec`,
whose docstring gives the loss: pre-training on simulated curves, then fine-tuning on the
cohort, with checkpoints and resume; its curve reconstruction is :func:`reconstruct`).
:func:`predict_subject` maps a whole subject with a network of this module's normalisation
(:func:`prepare_curves`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bolus.config import PerfusionConstants

TISSUE_SCALE = 0.05  # tissue / AIF peak of a grey-matter-like curve
RESIDUE_SCALE = 0.01  # 1/s: (ρ/k_H)·F of grey matter ≈ 0.014 1/s
BAD_SCALE_S = 10.0
MIN_CBF_FOR_MTT = 1e-3


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of :class:`PerfusionTransformer` (Zeng et al. 2025: 3 layers, d_model 64, 16 heads)
    and its model grid (``n_samples`` every ``dt_s`` s; ``patch`` samples per token, the stride
    of the conv projection, whose kernel is ``kernel`` samples)."""

    n_samples: int = 96
    dt_s: float = 1.0
    patch: int = 6
    kernel: int = 8
    d_model: int = 64
    n_heads: int = 16
    n_layers: int = 3
    d_feedforward: int = 128
    dropout: float = 0.0
    residue_scale: float = 0.01  # 1/s per unit of the residue head (RESIDUE_SCALE)


def _sinusoidal(n: int, d: int) -> torch.Tensor:
    position = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    out = torch.zeros(n, d)
    out[:, 0::2] = torch.sin(position * freq)
    out[:, 1::2] = torch.cos(position * freq)
    return out


class _Tokeniser(nn.Module):
    """(batch, L) curve + (batch, L) mask → (batch, N, d): conv projection + fixed sinusoidal
    positional encoding + learnable temporal embedding."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_tokens = -(-cfg.n_samples // cfg.patch)
        self.proj = nn.Conv1d(
            2,
            cfg.d_model,
            kernel_size=cfg.kernel,
            stride=cfg.patch,
            padding=max((cfg.kernel - cfg.patch + 1) // 2, 0),
        )
        self.register_buffer("position", _sinusoidal(self.n_tokens, cfg.d_model), persistent=False)
        self.temporal = nn.Parameter(0.02 * torch.randn(self.n_tokens, cfg.d_model))

    def forward(self, curve: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = torch.stack([curve * valid, valid.to(curve.dtype)], dim=1)
        x = self.proj(x)[..., : self.n_tokens].transpose(1, 2)
        return x + self.position + self.temporal


class PerfusionTransformer(nn.Module):
    """Zeng et al. 2025 voxel-wise Transformer; see the module docstring for shapes and units.

    ``forward(tissue, aif, valid=None)`` takes model-grid curves already normalised by
    :func:`prepare_curves` and returns ``{"residue", "local_aif", "bad_s"}`` (``"bad"`` is
    the same tensor). ``valid=None``: every sample is valid.

    Built from a :class:`TransformerConfig`, or as ``PerfusionTransformer(n_samples,
    d_model=, heads=, layers=, feedforward=, patch=, stride=)`` (``patch`` is then the conv
    kernel and ``stride`` its stride: the sizes a training spec may pass, for curves
    normalised by the AIF area as :mod:`bolus.learn.datasets` does; residue scale 0.1 1/s).
    """

    def __init__(self, config: TransformerConfig | int | None = None, **sizes):
        super().__init__()
        if isinstance(config, int):
            names = {"d_model": "d_model", "heads": "n_heads", "layers": "n_layers",
                     "feedforward": "d_feedforward", "patch": "kernel", "stride": "patch",
                     "dt_s": "dt_s", "dropout": "dropout"}  # fmt: skip
            names["residue_scale"] = "residue_scale"
            unknown = set(sizes) - set(names)
            if unknown:
                raise TypeError(f"unknown PerfusionTransformer sizes: {sorted(unknown)}")
            # curves normalised by the AIF area (bolus.learn.datasets: tissue ×100, AIF ×10)
            # give a residue 10× that of curves normalised by the AIF peak
            sizes.setdefault("residue_scale", 10 * RESIDUE_SCALE)
            cfg = TransformerConfig(n_samples=config, **{names[k]: v for k, v in sizes.items()})
        else:
            cfg = config or TransformerConfig()
        self.config = cfg
        self.tissue_tokens = _Tokeniser(cfg)
        self.aif_tokens = _Tokeniser(cfg)
        layer = dict(
            d_model=cfg.d_model,
            nhead=cfg.n_heads,
            dim_feedforward=cfg.d_feedforward,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer), cfg.n_layers, enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), cfg.n_layers)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.residue_head = nn.Linear(cfg.d_model, cfg.patch)
        self.aif_head = nn.Linear(cfg.d_model, cfg.patch)
        self.bad_head = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, 1)
        )
        # start from a small residue (softplus(−4) ≈ 0.018 units: CBV ≈ 1 ml/100 g over 96 s)
        # so the first reconstructions are of the order of the tissue curves
        nn.init.constant_(self.residue_head.bias, -4.0)

    def forward(self, tissue, aif, valid=None) -> dict[str, torch.Tensor]:
        cfg = self.config
        batch, n = tissue.shape
        # CPU inference (eval, no autograd): the same layers through :func:`_encoder_layer`
        # and :func:`_decoder_layer`, whose attention suits 4-wide heads far better than
        # PyTorch's kernels, and one AIF token sequence for a batch sharing one AIF
        fast = tissue.device.type == "cpu" and not self.training and not torch.is_grad_enabled()
        shared = fast and _rows_equal(aif) and (valid is None or _rows_equal(valid))
        if aif.dim() == 1:
            aif = aif.expand(batch, -1)
        if valid is None:
            valid = torch.ones_like(tissue, dtype=torch.bool)
        width = self.tissue_tokens.n_tokens * cfg.patch
        if width > n:  # pad to whole tokens; the padding is invalid
            tissue = nn.functional.pad(tissue, (0, width - n))
            aif = nn.functional.pad(aif, (0, width - n))
            valid = nn.functional.pad(valid, (0, width - n), value=False)
        token_valid = valid[:, :: cfg.patch]  # a token is valid when its first sample is
        # padding is marked by the validity channel of the tokens, not by attention masks:
        # every sequence has the same length, and attention runs on the fused fast path
        if fast:
            memory = self.tissue_tokens(tissue, valid)
            for layer in self.encoder.layers:
                memory = _encoder_layer(layer, memory)
            x = self.aif_tokens(aif[:1], valid[:1]) if shared else self.aif_tokens(aif, valid)
            for i, layer in enumerate(self.decoder.layers):
                x = _decoder_layer(layer, x, memory, expand=shared and i == 0)
        else:
            memory = self.encoder(self.tissue_tokens(tissue, valid))
            x = self.decoder(self.aif_tokens(aif, valid), memory)
        x = self.norm(x)
        residue = nn.functional.softplus(self.residue_head(x).reshape(batch, -1)[:, :n])
        residue = torch.sort(residue, dim=-1, descending=True).values * cfg.residue_scale
        local = self.aif_head(x).reshape(batch, -1)[:, :n]
        weights = token_valid.to(x.dtype)[..., None]
        pooled = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        bad = nn.functional.softplus(self.bad_head(pooled)[:, 0]) * BAD_SCALE_S  # δ ≥ 0
        return {"residue": residue, "local_aif": local, "bad_s": bad, "bad": bad}


def acquired(aif: torch.Tensor) -> torch.Tensor:
    """Validity (bool, the shape of ``aif`` (..., L)) of a model-grid AIF whose end is held
    beyond the acquisition (:func:`bolus.learn.datasets.model_inputs`, and the simulated
    curves of the training data): False on the grid samples after the first of the curve's
    trailing run of values equal to its last. Holding copies the last frame's value, so the
    run is exact; a measured AIF's noise makes two equal acquired samples rare, and at worst
    its last few samples count as held. The tissue curves share the AIF's times."""
    same = (aif == aif[..., -1:]).to(torch.int8)
    run = same.flip(-1).cummin(-1).values.flip(-1).bool()  # the trailing run of equal values
    held = torch.zeros_like(run)
    held[..., 1:] = run[..., 1:] & run[..., :-1]
    return ~held


def _rows_equal(x: torch.Tensor) -> bool:
    """True for a 1-D tensor or one whose rows all equal the first."""
    return x.dim() == 1 or bool((x == x[:1]).all())


def _attention(mha: nn.MultiheadAttention, x: torch.Tensor, memory=None) -> torch.Tensor:
    """``mha(x, kv, kv, need_weights=False)[0]`` with kv = ``memory`` (``x`` when None), for
    batch-first inputs (batch, tokens, d), no masks, no dropout (inference): the same
    projections and softmax(q·kᵀ/√d_head)·v, as batched matrix products on the natural
    (batch, heads, tokens, d_head) views; the softmax is exp(s − max) with the division
    applied after the product with v (one pass fewer over the scores). Equal to PyTorch's
    kernels to float rounding (tested), and several times faster for 4-wide heads."""
    b, n, d = x.shape
    h = mha.num_heads
    w, bias = mha.in_proj_weight, mha.in_proj_bias
    if memory is None:
        qkv = nn.functional.linear(x, w, bias).view(b, n, 3, h, d // h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous()  # each (batch, heads, tokens, d_head)
    else:
        q = nn.functional.linear(x, w[:d], bias[:d]).view(b, n, h, d // h)
        q = q.transpose(1, 2).contiguous()
        kv = nn.functional.linear(memory, w[d:], bias[d:]).view(b, memory.shape[1], 2, h, d // h)
        k, v = kv.permute(2, 0, 3, 1, 4).contiguous()
    scores = torch.matmul(q.mul_((d // h) ** -0.5), k.transpose(-1, -2))
    scores = scores.sub_(scores.amax(-1, keepdim=True)).exp_()
    out = torch.matmul(scores, v).div_(scores.sum(-1, keepdim=True))
    out = out.transpose(1, 2).reshape(b, n, d)
    return nn.functional.linear(out, mha.out_proj.weight, mha.out_proj.bias)


def _feedforward(layer, x: torch.Tensor) -> torch.Tensor:
    return layer.linear2(layer.activation(layer.linear1(x)))


def _encoder_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """Inference of a pre-norm (``norm_first``) encoder layer, as its own ``forward``."""
    x = x + _attention(layer.self_attn, layer.norm1(x))
    return x + _feedforward(layer, layer.norm2(x))


def _decoder_layer(layer, x: torch.Tensor, memory: torch.Tensor, expand: bool = False):
    """Inference of a pre-norm decoder layer, as its own ``forward``. ``expand``: ``x`` is
    one sequence shared by every memory row; its self-attention is computed once."""
    x = x + _attention(layer.self_attn, layer.norm1(x))
    if expand:
        x = x.expand(memory.shape[0], -1, -1)
    x = x + _attention(layer.multihead_attn, layer.norm2(x), memory)
    return x + _feedforward(layer, layer.norm3(x))


def build(config: TransformerConfig | None = None, seed: int | None = None) -> PerfusionTransformer:
    """A fresh :class:`PerfusionTransformer` (weights from ``seed`` when given)."""
    if seed is not None:
        torch.manual_seed(int(seed))
    return PerfusionTransformer(config)


# ----------------------------------------------------------------------------- data
def model_grid(config: TransformerConfig) -> np.ndarray:
    """Times (s from the first frame) of the model grid."""
    return np.arange(config.n_samples) * config.dt_s


def resample_rows(curves, times_s, grid_s):
    """Linear interpolation of each row of ``curves`` (n, F) from its times (n, F) (NaN for
    absent frames, increasing, from the row's first frame) or shared times (F,) onto
    ``grid_s`` (L,) counted from the first frame. Returns values (n, L) (0 where invalid)
    and valid (n, L) bool (grid time within the acquisition)."""
    curves = np.asarray(curves, dtype=np.float64)
    times = np.asarray(times_s, dtype=np.float64)
    grid = np.asarray(grid_s, dtype=np.float64)
    if times.ndim == 1:  # one time vector for every row: weights once, one gather
        rel = times - times[0]
        idx = np.clip(np.searchsorted(rel, grid, side="right") - 1, 0, rel.size - 2)
        w = np.clip((grid - rel[idx]) / (rel[idx + 1] - rel[idx]), 0.0, 1.0)
        valid = np.broadcast_to(grid <= rel[-1] + 1e-9, (curves.shape[0], grid.size))
        out = curves[:, idx] * (1 - w) + curves[:, idx + 1] * w
        return np.where(valid, out, 0.0), valid.copy()
    rel = times - times[:, :1]
    last = np.nanmax(rel, axis=1)
    filled = np.where(np.isnan(rel), np.inf, rel)
    idx = (filled[:, :, None] <= grid[None, None, :]).sum(axis=1) - 1  # (n, L)
    n_frames = np.isfinite(filled).sum(axis=1)
    idx = np.clip(idx, 0, np.maximum(n_frames - 2, 0)[:, None])
    rows = np.arange(curves.shape[0])[:, None]
    t0, t1 = rel[rows, idx], rel[rows, idx + 1]
    w = np.clip((grid[None, :] - t0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0, 1.0)
    valid = grid[None, :] <= last[:, None] + 1e-9
    out = curves[rows, idx] * (1 - w) + curves[rows, idx + 1] * w
    return np.where(valid, out, 0.0), valid


def prepare_curves(tissue, aif, time_s, config: TransformerConfig):
    """Normalised model-grid inputs from concentration curves (any units: ΔR2*, mM, HU).

    ``tissue`` (n, F); ``aif`` (F,) shared or (n, F) per row; ``time_s`` (F,) or (n, F).
    Returns float32 tissue (n, L) / (AIF peak · TISSUE_SCALE), AIF (n, L) or (L,) / its peak,
    valid (n, L) and the AIF peak(s).
    """
    grid = model_grid(config)
    tissue_g, valid = resample_rows(tissue, time_s, grid)
    aif = np.asarray(aif, dtype=np.float64)
    shared = aif.ndim == 1
    times = np.asarray(time_s, dtype=np.float64)
    if shared and times.ndim == 2:
        raise ValueError("one AIF for every curve needs one time vector, got per-curve times")
    aif_g, _ = resample_rows(aif[None] if shared else aif, times, grid)
    peak = np.nanmax(np.asarray(aif[None] if shared else aif), axis=-1)
    if np.any(~np.isfinite(peak)) or np.any(peak <= 0):
        raise ValueError("the AIF has no positive peak; check the AIF curve")
    aif_n = aif_g / peak[:, None]
    tissue_n = tissue_g / (peak[:, None] * TISSUE_SCALE)
    return (
        tissue_n.astype(np.float32),
        (aif_n[0] if shared else aif_n).astype(np.float32),
        valid,
        peak,
    )


# ----------------------------------------------------------------------------- physics
def reconstruct(local_aif: torch.Tensor, residue: torch.Tensor, dt_s: float) -> torch.Tensor:
    """Δt·(a_loc ⊛ r) on the model grid, causal and linear (FFT of twice the length); in
    units of the AIF peak (compare with tissue·TISSUE_SCALE)."""
    n = local_aif.shape[-1]
    size = 2 * n
    spec = torch.fft.rfft(local_aif, size) * torch.fft.rfft(residue, size)
    return torch.fft.irfft(spec, size)[..., :n] * dt_s


def maps_from_outputs(out: dict, config: TransformerConfig, constants: PerfusionConstants):
    """CBF, CBV, MTT, Tmax tensors (batch,) from the network outputs (see module docstring)."""
    r = out["residue"]
    cbf = constants.cbf_scale * r.max(dim=-1).values
    cbv = constants.cbv_scale * r.sum(dim=-1) * config.dt_s
    mtt = torch.where(cbf >= MIN_CBF_FOR_MTT, 60.0 * cbv / cbf.clamp_min(MIN_CBF_FOR_MTT), 0.0)
    tmax = config.dt_s * r.argmax(dim=-1).to(r.dtype) + out["bad_s"]
    return {"cbf": cbf, "cbv": cbv, "mtt": mtt, "tmax": tmax}


# ----------------------------------------------------------------------------- inference
def predict_curves(model, tissue, aif, time_s, *, batch_size: int = 1024, constants=None):
    """Maps (cbf, cbv, mtt, tmax; (n,) float32) of curves (n, F) with one AIF (F,)."""
    constants = constants or PerfusionConstants.from_config()
    cfg = model.config
    device = next(model.parameters()).device
    x, a, valid, _ = prepare_curves(tissue, aif, time_s, cfg)
    names = ("cbf", "cbv", "mtt", "tmax")
    result = {k: np.empty(x.shape[0], np.float32) for k in names}
    model.eval()
    a_t = torch.from_numpy(a).to(device)
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(x[s : s + batch_size]).to(device)
            vb = torch.from_numpy(valid[s : s + batch_size]).to(device)
            maps = maps_from_outputs(model(xb, a_t, vb), cfg, constants)
            for k in names:
                result[k][s : s + xb.shape[0]] = maps[k].float().cpu().numpy()
    return result


def predict_subject(
    model, conc, time_s, aif, mask, *, batch_size: int = 1024, constants=None
) -> dict[str, np.ndarray]:
    """CBF, CBV, MTT, Tmax maps (X, Y, Z) float32 of one subject; 0 outside ``mask``.

    ``conc`` (X, Y, Z, T) concentration (ΔR2* or HU above baseline), ``time_s`` (T,),
    ``aif`` (T,) the global AIF on the same times, ``mask`` (X, Y, Z) bool.
    """
    conc = np.asarray(conc)
    inside = np.asarray(mask).astype(bool)
    if inside.shape != conc.shape[:-1]:
        raise ValueError(
            f"mask has shape {inside.shape}, the data's spatial shape is {conc.shape[:-1]}"
        )
    curves = np.nan_to_num(conc[inside].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    values = predict_curves(model, curves, aif, time_s, batch_size=batch_size, constants=constants)
    maps = {}
    for name, v in values.items():
        full = np.zeros(inside.shape, np.float32)
        full[inside] = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        maps[name] = full
    return maps
