"""Model specifications: for every model name, how to build it, feed it, score it and apply it.

A :class:`ModelSpec` ties one network of :mod:`bolus.models` to the training data layouts of
:mod:`bolus.learn.datasets`:

* ``build(n_timepoints, params)`` → the ``nn.Module`` (sizes from ``params``);
* ``batch(data, rows, ctx)`` → the tensors of one training batch (training samples);
* ``loss(model, batch, ctx)`` → a scalar loss;
* ``predict(model, inputs, ctx)`` → ``{map: (X, Y, Z) array}`` for one subject, in
  ml/100 g/min, ml/100 g and s.

``ctx`` (:class:`Context`) holds what is fixed for one trained model: the device, the
time grid, the per-map target scales (mean, sd over the training voxels), the physical
constants and the model's parameters. Targets are learned as (map − mean)/sd.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from bolus.learn.datasets import AIF_SCALE, CURVE_SCALE, MAPS, target_norm
from bolus.models import MODELS


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is cuda but no CUDA device is available")
    return torch.device(name)


@dataclass
class Context:
    device: torch.device
    times_s: np.ndarray  # model time grid (s, from 0)
    norm: dict[str, tuple[float, float]]  # map → (mean, sd) of the training targets
    params: dict[str, Any]
    kh_over_rho: float  # k_H / ρ (ml/g), for CBV from curve areas
    tmax_threshold_s: float
    autocast: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def dt(self) -> float:
        return float(self.times_s[1] - self.times_s[0])

    def scale(self, maps) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor([self.norm[m][0] for m in maps], device=self.device)
        sd = torch.tensor([self.norm[m][1] for m in maps], device=self.device)
        return mean, sd


def _masked_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |pred − target| over the finite targets (targets NaN where undefined)."""
    ok = torch.isfinite(target)
    if not ok.any():
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred[ok], target[ok], beta=0.5)


#: maps whose error :func:`supervised_loss` counts relative to the reference value when
#: ``relative_loss`` is on (flows and volumes); times (Tmax, TTP) stay absolute
RELATIVE_MAPS = ("cbf", "cbv", "mtt")


def supervised_loss(pred: torch.Tensor, target: torch.Tensor, ctx, maps) -> torch.Tensor:
    """Smooth L1 of normalised maps (map axis 1: (n, M) or (B, M, H, W)), NaN targets left out.

    ``relative_loss`` (training parameter) makes the errors of :data:`RELATIVE_MAPS` relative
    to the reference (reference floored at 10 % of the training mean; Tmax and TTP stay
    absolute), scaled by mean/sd so that a voxel at the training mean keeps its absolute loss:

    * ``true``: the error weighted by mean/reference, i.e. (mean/sd)·|estimate − reference|/
      reference. Its minimiser for an uncertain voxel is the median of the plausible values
      weighted by 1/value, below their median: on noisy curves it under-reads flow.
    * ``log``: (mean/sd)·|log estimate − log reference| (an estimate below the floor continues
      the logarithm's tangent there). Its minimiser is the median of the plausible values: a
      factor too high costs what the same factor too low does, so noise does not bias the
      ratio estimate/reference (what a study's median ratio reports).
    """
    mode = ctx.params.get("relative_loss")
    if not mode:
        return _masked_l1(pred, target)
    ok = torch.isfinite(target)
    if not ok.any():
        return pred.sum() * 0.0
    mean, sd = ctx.scale(maps)
    shape = (1, -1) + (1,) * (target.dim() - 2)
    mean, sd = mean.view(shape), sd.view(shape)
    relative = torch.tensor([m in RELATIVE_MAPS for m in maps], device=target.device).view(shape)
    floor = 0.1 * mean
    truth = torch.clamp(target * sd + mean, min=floor)
    if mode == "log":
        estimate = pred * sd + mean
        log_estimate = torch.where(
            estimate >= floor,
            torch.log(torch.maximum(estimate, floor)),
            torch.log(floor) + (estimate - floor) / floor,
        )
        error = torch.where(
            relative, (mean / sd) * (log_estimate - torch.log(truth)), pred - target
        )
        return F.smooth_l1_loss(error[ok], torch.zeros_like(error[ok]), beta=0.5)
    weight = torch.where(relative, mean / truth, 1.0)
    error = F.smooth_l1_loss(pred[ok], target[ok], beta=0.5, reduction="none")
    return (error * weight.expand_as(target)[ok]).mean()


def _to(x, device, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _clip_physical(maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.clip(v, 0.0, None).astype(np.float32) for k, v in maps.items()}


def _autocast(ctx: Context):
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=ctx.autocast)


class ModelSpec:
    """One model for the training engine (:func:`bolus.learn.train.train_model`) and for
    prediction (:func:`bolus.learn.predict.predict_subject`). A torch model overrides
    ``build``, ``batch``, ``loss`` and ``predict``; the hooks below have the defaults of a
    supervised model with one optimiser."""

    name: str = ""
    framework = "torch"
    #: read a subject whose bolus peaks outside the training subjects' AIF peak times
    #: shifted into them (:func:`bolus.learn.datasets.bolus_offset`): for networks whose
    #: temporal filters see one cohort's timing (the slice models, trained on phantoms of
    #: one injection protocol); such a model predicts no absolute time (TTP)
    aligns_bolus = False

    @property
    def maps(self) -> tuple[str, ...]:
        return MODELS[self.name].maps

    @property
    def layout(self) -> str:
        return MODELS[self.name].layout

    def map_columns(self) -> list[int]:
        return [MAPS.index(m) for m in self.maps]

    def phases(self, params) -> list[tuple[str, int]]:
        """(phase name, epochs) in order; most models have one ``train`` phase."""
        return [("train", int(params["epochs"]))]

    def n_frames(self, params, n_timepoints: int) -> int:
        return n_timepoints

    def open_data(self, data_dir):
        """The training data (memory-mapped) of the model's layout."""
        from bolus.learn.datasets import open_layout

        return open_layout(data_dir, self.layout)

    def batch_size(self, params) -> int:
        """Training rows per batch: voxels, or slices."""
        return int(params["batch_size" if self.layout == "voxels" else "slices_per_batch"])

    def target_norm(self, data) -> dict[str, tuple[float, float]]:
        """(mean, sd) of every map it learns over the training rows (the maps the
        references hold; :func:`bolus.learn.datasets.target_norm`)."""
        return target_norm(data, self.maps)

    def prepare(self, model, data, ctx: Context) -> None:
        """Fit what the network holds of the training data before the first epoch (and
        again, identically, before a resume); nothing for most models."""

    def optimisers(self, model, params) -> list:
        return [torch.optim.Adam(model.parameters(), lr=float(params["lr"]))]

    def step(self, model, optimisers, batch, ctx: Context, phase: str) -> dict[str, float]:
        """One update on one batch; the losses (``loss`` is the training curve's)."""
        (optimiser,) = optimisers
        loss = self.loss(model, batch, ctx, phase)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimiser.step()
        return {"loss": float(loss.detach())}

    def series_inputs(self, subject, ctx: Context) -> tuple:
        """What :meth:`predict` takes of a :class:`bolus.learn.datasets.SubjectSeries`: the
        normalised curves, AIF and S0 on the model's time grid, and the brain mask."""
        from bolus.learn.datasets import bolus_offset, model_inputs

        peaks = ctx.extra.get("aif_peak_s") if self.aligns_bolus else None
        offset = bolus_offset(subject, peaks) if peaks else 0.0
        curves, aif, s0 = model_inputs(subject, ctx.times_s + subject.times_s[0] + offset)
        return curves, aif, s0, subject.mask

    def subject_inputs(self, output_dir, participant_id: str, ctx: Context):
        """(what :meth:`predict` takes, the affine of the maps) of one subject's outputs."""
        from bolus.learn.datasets import load_subject

        subject = load_subject(output_dir, participant_id)
        return self.series_inputs(subject, ctx), subject.affine


# ----------------------------------------------------------------------------- voxel-wise
class VoxelSpec(ModelSpec):
    predict_batch = 16384  # voxels per inference chunk (``params["predict_batch"]`` overrides)

    def batch(self, data, rows, ctx: Context, phase: str = "train") -> dict:
        mean, sd = self.scale_np(ctx)
        targets = (np.asarray(data["targets"][rows][:, self.map_columns()]) - mean) / sd
        return {
            "curves": _to(data["curves"][rows], ctx.device),
            "aif": _to(data["aifs"][np.asarray(data["subject"][rows])], ctx.device),
            "targets": _to(targets, ctx.device),
        }

    def scale_np(self, ctx):
        mean = np.array([ctx.norm[m][0] for m in self.maps], np.float32)
        sd = np.array([ctx.norm[m][1] for m in self.maps], np.float32)
        return mean, sd

    def voxel_outputs(self, model, curves, aif, ctx) -> np.ndarray:
        """(n, maps) in map units for (n, T) normalised curves."""
        raise NotImplementedError

    def predict(self, model, inputs, ctx: Context) -> dict[str, np.ndarray]:
        curves, aif, _s0, mask = inputs
        chunk = int(ctx.params.get("predict_batch", self.predict_batch))
        voxels = curves[mask]
        out = np.zeros((voxels.shape[0], len(self.maps)), np.float32)
        for at in range(0, voxels.shape[0], chunk):
            block = voxels[at : at + chunk]
            out[at : at + chunk] = self.voxel_outputs(
                model, block, np.ascontiguousarray(np.broadcast_to(aif, block.shape)), ctx
            )
        maps = {}
        for i, name in enumerate(self.maps):
            volume = np.zeros(mask.shape, np.float32)
            volume[mask] = out[:, i]
            maps[name] = volume
        return _clip_physical(maps)


class MLPSpec(VoxelSpec):
    name = "mlp"

    def build(self, n_timepoints, params):
        from bolus.models.baselines import VoxelMLP

        return VoxelMLP(n_timepoints, len(self.maps), tuple(params["hidden"]), params["dropout"])

    def loss(self, model, batch, ctx, phase="train"):
        return supervised_loss(
            model(batch["curves"], batch["aif"]), batch["targets"], ctx, self.maps
        )

    @torch.no_grad()
    def voxel_outputs(self, model, curves, aif, ctx):
        mean, sd = ctx.scale(self.maps)
        with _autocast(ctx):
            pred = model(_to(curves, ctx.device), _to(aif, ctx.device)).float()
        return (pred * sd + mean).cpu().numpy()


class RandomForestSpec(VoxelSpec):
    """scikit-learn random forest on [curve, AIF] features; fitted once (no epochs)."""

    name = "rf"
    framework = "sklearn"

    def build(self, n_timepoints, params):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(
            n_estimators=int(params["n_estimators"]),
            max_depth=params["max_depth"],
            min_samples_leaf=int(params["min_samples_leaf"]),
            n_jobs=int(params.get("threads", 1)),
            random_state=int(params["seed"]),
        )

    def features(self, curves, aif) -> np.ndarray:
        return np.concatenate([curves, aif], axis=-1)

    def voxel_outputs(self, model, curves, aif, ctx):
        mean, sd = self.scale_np(ctx)
        return model.predict(self.features(curves, aif)) * sd + mean


class TransformerSpec(VoxelSpec):
    """Zeng et al. 2025: pre-training on simulated curves, then fine-tuning on the cohort.

    Pre-training loss: MSE(BAD/10 s) + λ1·MSE(local AIF) + λ2·MSE(reconstructed curve) +
    λ3·mean((d²b/dt²)²), all targets known from the simulation; the curve is compared over
    the acquisition only (:func:`bolus.models.transformer.acquired`: not the held end of a
    short one, which the network also sees as invalid). Fine-tuning on the cohort,
    where neither the local AIF nor the delay is known: MSE(BAD vs reference Tmax, /10 s) +
    MSE of the normalised CBF and CBV derived from b(t) + λ2·reconstruction + λ3·smoothness.
    """

    name = "transformer"
    predict_batch = 1024  # its (voxels, heads, tokens, tokens) attention scores stay in cache

    def build(self, n_timepoints, params):
        from bolus.models.transformer import PerfusionTransformer

        return PerfusionTransformer(
            n_timepoints,
            d_model=int(params["d_model"]),
            heads=int(params["heads"]),
            layers=int(params["layers"]),
            feedforward=int(params["feedforward"]),
            patch=int(params["patch"]),
            stride=int(params["stride"]),
        )

    def phases(self, params):
        return [("pretrain", int(params["pretrain_epochs"])), ("finetune", int(params["epochs"]))]

    def reconstruct(self, local_aif, residue, dt) -> torch.Tensor:
        """curve = dt · (local AIF ⊛ b), causal (:func:`bolus.models.transformer.reconstruct`)."""
        from bolus.models.transformer import reconstruct

        return reconstruct(local_aif.float(), residue.float(), dt)

    def maps_from(self, out, ctx) -> dict[str, torch.Tensor]:
        b = out["residue"].float()
        # curve = dt·(local AIF ⊛ b) in the normalised units of bolus.learn.datasets gives
        # b = (CURVE_SCALE/AIF_SCALE)·(ρ/k_H)·F·R, F in ml/g/s
        to_flow = ctx.kh_over_rho * AIF_SCALE / CURVE_SCALE  # b → F·R (ml/g/s)
        cbf = 6000.0 * to_flow * b[:, 0]
        cbv = 100.0 * to_flow * b.sum(-1) * ctx.dt
        mtt = 60.0 * cbv / torch.clamp(cbf, min=1e-3)
        return {"cbf": cbf, "cbv": cbv, "mtt": mtt, "tmax": out["bad"].float()}

    def batch(self, data, rows, ctx, phase="finetune"):
        if phase == "pretrain":
            sim = ctx.extra["pretrain"]
            return {k: _to(v[rows], ctx.device) for k, v in sim.items()}
        batch = super().batch(data, rows, ctx)
        batch["raw"] = _to(data["targets"][rows][:, self.map_columns()], ctx.device)
        return batch

    def loss(self, model, batch, ctx, phase="finetune"):
        from bolus.models.transformer import acquired

        p = ctx.params
        valid = acquired(batch["aif"])  # the acquisition's span: the held end is not data
        with _autocast(ctx):
            out = model(batch["curves"], batch["aif"], valid)
        residue = out["residue"].float()
        smooth = (residue[:, 2:] - 2 * residue[:, 1:-1] + residue[:, :-2]).pow(2).mean()
        local = out["local_aif"].float() if phase == "pretrain" else batch["aif"]
        error = (self.reconstruct(local, residue, ctx.dt) - batch["curves"]).pow(2)
        recon = (error * valid).sum() / valid.sum().clamp_min(1)
        if phase == "pretrain":
            return (
                F.mse_loss(out["bad"].float() / 10.0, batch["bad"] / 10.0)
                + p["lambda_aif"] * F.mse_loss(out["local_aif"].float(), batch["local_aif"])
                + p["lambda_recon"] * recon
                + p["lambda_smooth"] * smooth
            )
        maps = self.maps_from(out, ctx)
        mean, sd = ctx.scale(self.maps)
        pred = torch.stack([maps[m] for m in self.maps], dim=-1)
        supervised = supervised_loss((pred - mean) / sd, batch["targets"], ctx, self.maps)
        return supervised + p["lambda_recon"] * recon + p["lambda_smooth"] * smooth

    @torch.inference_mode()
    def voxel_outputs(self, model, curves, aif, ctx):
        from bolus.models.transformer import acquired

        aif = _to(aif, ctx.device)
        with _autocast(ctx):
            out = model(_to(curves, ctx.device), aif, acquired(aif))
        maps = self.maps_from(out, ctx)
        return torch.stack([maps[m] for m in self.maps], dim=-1).cpu().numpy()


# ----------------------------------------------------------------------------- slice-wise
def _box(mask2d: np.ndarray, margin: int) -> tuple[slice, slice]:
    """In-plane bounding box of ``mask2d`` grown by ``margin`` voxels (whole plane if empty)."""
    if not mask2d.any():
        return (slice(None), slice(None))
    out = []
    for axis in (1, 0):
        hits = np.flatnonzero(mask2d.any(axis=axis))
        out.append(
            slice(max(hits[0] - margin, 0), min(hits[-1] + margin + 1, mask2d.shape[1 - axis]))
        )
    return tuple(out)


class SliceSpec(ModelSpec):
    aligns_bolus = True

    def slice_batch(self, data, rows, ctx, frames=None, box=(slice(None), slice(None))) -> dict:
        """Tensors of the slices ``rows``, cropped in-plane to ``box``; targets normalised,
        NaN outside the mask."""
        mean, sd = ctx.scale(self.maps)
        curves = np.asarray(data["curves"][rows])[(slice(None), slice(None)) + box]
        aifs = np.asarray(data["aifs"][np.asarray(data["subject"][rows])])
        if frames:
            curves, aifs = curves[:, :frames], aifs[:, :frames]
        mask = _to(np.asarray(data["mask"][rows])[(slice(None),) + box], ctx.device, torch.bool)
        targets = np.asarray(data["targets"][rows][:, self.map_columns()])
        targets = _to(targets[(slice(None), slice(None)) + box], ctx.device)
        targets = (targets - mean[:, None, None]) / sd[:, None, None]
        targets = torch.where(mask[:, None], targets, torch.nan)
        return {
            "curves": _to(np.ascontiguousarray(curves), ctx.device),
            "aif": _to(aifs, ctx.device),
            "s0": _to(np.asarray(data["s0"][rows])[(slice(None),) + box], ctx.device),
            "mask": mask,
            "targets": targets,
        }


class TalebiSpec(SliceSpec):
    name = "talebi"

    def n_frames(self, params, n_timepoints):
        frames = params.get("frames")
        return min(int(frames), n_timepoints) if frames else n_timepoints

    def build(self, n_timepoints, params):
        from bolus.models.talebi import TalebiNet

        return TalebiNet(
            self.n_frames(params, n_timepoints),
            len(self.maps),
            tuple(params["temporal_channels"]),
            int(params["temporal_length"]),
            int(params["base_channels"]),
            int(params["depth"]),
        )

    def batch(self, data, rows, ctx, phase="train"):
        return self.slice_batch(data, rows, ctx, self.n_frames(ctx.params, ctx.times_s.size))

    def loss(self, model, batch, ctx, phase="train"):
        with _autocast(ctx):
            pred = model(batch["curves"], batch["aif"]).float()
        return supervised_loss(pred, batch["targets"], ctx, self.maps)

    @torch.no_grad()
    def predict(self, model, inputs, ctx):
        curves, aif, _s0, mask = inputs
        frames = self.n_frames(ctx.params, ctx.times_s.size)
        mean, sd = ctx.scale(self.maps)
        x = _to(np.moveaxis(curves[..., :frames], (2, 3), (0, 1)), ctx.device)  # (Z, T, X, Y)
        a = _to(aif[:frames], ctx.device)
        out = np.zeros((len(self.maps),) + mask.shape, np.float32)
        per = int(ctx.params.get("predict_slices", 4))
        fast = ctx.device.type == "cpu"
        if fast:  # a channels-last copy: the same weights, the CPU's faster convolutions
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        for z0 in range(0, x.shape[0], per):
            block = x[z0 : z0 + per]
            with _autocast(ctx):
                pred = model(block, a.expand(block.shape[0], -1), fast=fast).float()
            out[..., z0 : z0 + per] = (
                (pred * sd[:, None, None] + mean[:, None, None]).permute(1, 2, 3, 0).cpu().numpy()
            )
        return _clip_physical({m: np.where(mask, out[i], 0.0) for i, m in enumerate(self.maps)})


class TalebiTruncatedSpec(TalebiSpec):
    name = "talebi_truncated"


class STNetSpec(SliceSpec):
    """ST-Net: slices through the fully convolutional spatial encoder; the temporal head on
    voxels sampled from each slice (every ``stride``-th voxel of the grid, lesion voxels —
    reference Tmax above the lesion threshold — making up ``lesion_fraction`` where the
    slice has them). Loss: L1 on normalised CBV, CBF, Tmax + ``physics_weight`` × |CBV −
    area-ratio CBV| / sd(CBV), per voxel over the batch."""

    name = "stnet"

    def build(self, n_timepoints, params):
        from bolus.models.stnet import STNet

        return STNet(
            n_timepoints,
            len(self.maps),
            tuple(params["spatial_channels"]),
            int(params["width"]),
            tuple(params["dilations"]),
            int(params["frame_pool"]),
            self.maps.index("tmax") if "tmax" in self.maps else None,
            int(params.get("timing_reach", 0)),  # records from before it read their own voxel
        )

    def sample_voxels(self, mask, lesion, ctx, rng) -> np.ndarray:
        """(n, 3) (slice, x, y) indices: stride grid, lesion:normal by ``lesion_fraction``."""
        p = ctx.params
        stride, n_per = int(p["stride"]), int(p["voxels_per_slice"])
        grid = np.zeros(mask.shape[1:], bool)
        offset = rng.integers(0, stride, size=2)
        grid[offset[0] :: stride, offset[1] :: stride] = True
        picks = []
        for k in range(mask.shape[0]):
            cand = mask[k] & grid
            les = np.argwhere(cand & lesion[k])
            nor = np.argwhere(cand & ~lesion[k])
            n_les = min(len(les), int(round(float(p["lesion_fraction"]) * n_per)))
            n_nor = min(len(nor), n_per - n_les)
            for pool, n in ((les, n_les), (nor, n_nor)):
                if n:
                    chosen = pool[rng.choice(len(pool), size=n, replace=False)]
                    picks.append(np.column_stack([np.full(n, k), chosen]))
        return np.concatenate(picks) if picks else np.zeros((0, 3), int)

    def batch(self, data, rows, ctx, phase="train"):
        # crop to the brain's box plus the 3-voxel reach of a 7×7 patch: the features of
        # every brain voxel are then exactly those of the whole slice, at a fraction of the cost
        mask = np.asarray(data["mask"][rows])
        box = _box(mask.any(axis=0), margin=3)
        batch = self.slice_batch(data, rows, ctx, box=box)
        mask = mask[(slice(None),) + box]
        tmax = np.asarray(data["targets"][rows][:, MAPS.index("tmax")])[(slice(None),) + box]
        lesion = np.nan_to_num(tmax) > ctx.tmax_threshold_s
        rng = ctx.extra.setdefault("rng", np.random.default_rng(int(ctx.params["seed"])))
        batch["voxels"] = _to(self.sample_voxels(mask, lesion, ctx, rng), ctx.device, torch.long)
        return batch

    def loss(self, model, batch, ctx, phase="train"):
        v = batch["voxels"]
        if v.shape[0] == 0:
            return sum(p.sum() for p in model.parameters()) * 0.0
        with _autocast(ctx):
            pred = model(batch["curves"], batch["s0"], batch["aif"], v, batch["mask"]).float()
        b, i, j = v[:, 0], v[:, 1], v[:, 2]
        target = batch["targets"][b, :, i, j]  # (n, maps)
        supervised = supervised_loss(pred, target, ctx, self.maps)
        # physics: CBV = (k_H/ρ)·∫C_t/∫C_a = (k_H/ρ)·∫curve dt / CURVE_SCALE·100, per voxel
        curves = batch["curves"][b, :, i, j]  # (n, T)
        area = torch.trapezoid(curves, dx=ctx.dt, dim=-1)
        cbv_physics = ctx.kh_over_rho * area * (100.0 / CURVE_SCALE)
        k = self.maps.index("cbv")
        mean, sd = ctx.scale(self.maps)
        cbv_pred = pred[:, k] * sd[k] + mean[k]
        physics = torch.mean(torch.abs(cbv_pred - cbv_physics)) / sd[k]
        return supervised + float(ctx.params["physics_weight"]) * physics

    @torch.no_grad()
    def predict(self, model, inputs, ctx):
        curves, aif, s0, mask = inputs
        mean, sd = ctx.scale(self.maps)
        out = np.zeros(mask.shape + (len(self.maps),), np.float32)
        a = _to(aif, ctx.device)
        chunk = int(ctx.params.get("predict_batch", 1024))
        for z in np.flatnonzero(mask.any(axis=(0, 1))):
            bx, by = _box(mask[:, :, z], margin=3)  # the 7×7 reach of every brain voxel
            x = _to(np.moveaxis(curves[bx, by, z], -1, 0), ctx.device)  # (T, x, y)
            inside = mask[bx, by, z]
            with _autocast(ctx):
                pred = model.predict_slice(
                    x, _to(s0[bx, by, z], ctx.device), a, _to(inside, ctx.device), chunk
                ).float()
            ij = np.argwhere(inside)
            out[ij[:, 0] + bx.start, ij[:, 1] + by.start, z] = (pred * sd + mean).cpu().numpy()
        return _clip_physical({m: out[..., i] for i, m in enumerate(self.maps)})


# ----------------------------------------------------------------------------- volumes
class Pix2PixSpec(ModelSpec):
    """pix2pix (Kossen et al.): coregistered TOF-MRA volume → CBF, CBV, MTT, Tmax, TTP.

    Through the same engine as every model, over the ``tof`` layout
    (:class:`bolus.learn.tof.TOFData`, one subject volume per batch as in Kossen et al.):
    two Adam optimisers (β1 0.5), one discriminator then one generator update per volume
    (:func:`bolus.models.pix2pix.training_step`, BCE + ``l1_weight``·L1); the training curve
    is the generator's L1, validation its L1 against the reference over the mask, in the
    targets' [−1, 1] units. The target scales are fitted on the training subjects
    (:func:`bolus.models.pix2pix.fit_scales`) and held by the network (buffer ``scales``),
    so the engine's (mean, sd) are the identity. Prediction reads the subject's coregistered
    TOF, not the DSC series."""

    name = "pix2pix"

    def build(self, n_timepoints, params):
        from bolus.models.pix2pix import Pix2Pix3D

        return Pix2Pix3D(int(params["base"]), int(params["depth"]), self.maps)

    def open_data(self, data_dir):
        from bolus.learn.tof import TOFData

        return TOFData(data_dir)

    def batch_size(self, params):
        return 1

    def target_norm(self, data):
        return {m: (0.0, 1.0) for m in self.maps}

    def prepare(self, model, data, ctx):
        from bolus.models.pix2pix import fit_scales

        rows = data.rows("train")
        targets = [np.asarray(data["targets"][r]) for r in rows]
        masks = [np.asarray(data["mask"][r]) for r in rows]
        maps = [{m: t[i] for i, m in enumerate(self.maps)} for t in targets]
        scales = fit_scales(maps, masks, self.maps)
        model.scales.copy_(torch.from_numpy(scales))
        ctx.extra["scales"] = scales

    def optimisers(self, model, params):
        from bolus.models.pix2pix import optimisers

        return list(optimisers(model, float(params["lr"])))

    def batch(self, data, rows, ctx, phase="train"):
        (row,) = rows
        example = data.example(int(row), ctx.extra["scales"], int(ctx.params["depth"]))
        tof, targets, mask = (v[None].to(ctx.device) for v in example)
        return {"tof": tof, "targets": targets, "mask": mask}

    def step(self, model, optimisers, batch, ctx, phase):
        from bolus.models.pix2pix import training_step

        opt_g, opt_d = optimisers
        parts = training_step(model, opt_g, opt_d, batch["tof"], batch["targets"],
                              batch["mask"], float(ctx.params["l1_weight"]))  # fmt: skip
        return {"loss": parts["l1"], "g_adversarial": parts["g_adversarial"], "d_loss": parts["d"]}

    def loss(self, model, batch, ctx, phase="train"):
        from bolus.models.pix2pix import _masked_l1

        return _masked_l1(model.generator(batch["tof"]), batch["targets"], batch["mask"])

    def subject_inputs(self, output_dir, participant_id, ctx):
        from bolus.learn.tof import load_tof_subject

        tof, mask, affine = load_tof_subject(output_dir, participant_id, normalise=False)
        return (tof, mask), affine

    @torch.no_grad()
    def predict(self, model, inputs, ctx):
        from bolus.models.pix2pix import predict_subject

        return predict_subject(model, *inputs)


SPECS: dict[str, type[ModelSpec]] = {
    s.name: s
    for s in (
        MLPSpec,
        RandomForestSpec,
        TransformerSpec,
        TalebiSpec,
        TalebiTruncatedSpec,
        STNetSpec,
        Pix2PixSpec,
    )
}


def get_spec(name: str) -> ModelSpec:
    if name not in SPECS:
        raise ValueError(f"model {name!r} is not implemented (available: {', '.join(SPECS)})")
    return SPECS[name]()
