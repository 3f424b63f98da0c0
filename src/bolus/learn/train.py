"""The training engine of every learned model: device, seeds, checkpoints, resume, early
stopping — for pre-training (:mod:`bolus.learn.pretrain`), fine-tuning and cohort training
alike. A model is a network (:mod:`bolus.models`) and a spec (:mod:`bolus.learn.specs`:
how to batch, step, score and predict it); the engine holds no model of its own.

:func:`train_model` is what the workflow's training rule (and ``bolus train``) calls. It

* resolves the configuration (``training`` block + ``model_params.<model>``; the schema
  holds every default) and saves it as ``config.yaml`` beside the model;
* picks the device (``device: auto`` = CUDA when present, with bf16 autocast there);
* seeds everything from ``seed``; each epoch re-seeds torch and its batch order from
  (seed, epoch), so a resumed run repeats exactly the epochs an uninterrupted one would;
* writes ``checkpoint.pt`` (weights, every optimiser, best weights, history, phase and epoch)
  atomically after every epoch and resumes from it when present — a preempted or killed
  job (a requeued Slurm job) restarts at the first epoch it had not finished, and a run
  given more ``epochs`` continues a finished one (the longer run, epoch for epoch);
* stops a phase early when the validation loss has not improved for ``patience`` epochs
  (validation = the ``val`` subjects, else every 5th training row or slice);
* with ``lr_search.enabled``, first picks the learning rate by k-fold cross-validation
  over the ``train`` subjects (:mod:`bolus.learn.lr_search`, ``lr_search.tsv``);
* writes ``curves.tsv`` and ``curves.png`` (training and validation loss per epoch) and
  finally ``model.pt``: the best weights with everything prediction needs.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bolus.config import PerfusionConstants, with_defaults

log = logging.getLogger("bolus.learn")

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
CURVES_TSV = "curves.tsv"
CURVES_PNG = "curves.png"
CONFIG = "config.yaml"


def resolve_params(config: dict | None, model: str) -> dict[str, Any]:
    """The ``training`` block, overlaid by ``model_params.<model>``, plus the seed."""
    config = with_defaults(config)
    params = dict(config["training"])
    params.update(config["model_params"].get(model, {}))
    params["seed"] = int(config["seed"])
    return params


def run_fingerprint(data_dir, params: dict) -> str:
    """What a checkpoint was trained on: the training data's meta.json and the parameters
    but ``epochs`` (a run given more epochs continues its checkpoint:
    :func:`_continues`). A checkpoint of another run (other data, other sizes) is not
    resumed."""
    import hashlib

    meta = (Path(data_dir) / "meta.json").read_bytes()
    kept = {k: v for k, v in params.items() if k not in ("threads", "epochs")}
    text = yaml.safe_dump(kept, sort_keys=True)
    return hashlib.sha256(meta + text.encode()).hexdigest()


def load_checkpoint(checkpoint: Path, device, fingerprint: str) -> dict | None:
    """The saved state to resume from, or None (none, or one of another run: started afresh
    and said so in the log). Every save adds ``fingerprint``."""
    import torch

    if not checkpoint.exists():
        return None
    saved = torch.load(checkpoint, map_location=device, weights_only=False)
    if saved.get("fingerprint") != fingerprint:
        log.info("%s is of another run (other data or parameters): starting afresh", checkpoint)
        return None
    return saved


def _save_atomic(obj, path: Path) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_curves(history: list[dict], model_dir: Path, figure: bool = True) -> None:
    """curves.tsv and (``figure``) curves.png: loss per epoch, training and validation."""
    table = pd.DataFrame(history)
    table.to_csv(model_dir / CURVES_TSV, sep="\t", index=False, float_format="%.6g")
    if not figure:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for phase, part in table.groupby("phase", sort=False):
        ax.plot(part["epoch"], part["train_loss"], "o-", label=f"{phase} train")
        ax.plot(part["epoch"], part["val_loss"], "s--", label=f"{phase} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if (table[["train_loss", "val_loss"]] > 0).all().all():
        ax.set_yscale("log")
    ax.set_title(model_dir.name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(model_dir / CURVES_PNG, dpi=100)
    plt.close(fig)


def _context(spec, data, params, config, device, init=None):
    """The training context; with ``init`` (the record of the weights fine-tuned) its time
    grid and target scales, so the weights mean what they meant, and every map it predicts
    (those the references lack keep what the init learned)."""
    import torch

    from bolus.learn.specs import Context

    constants = PerfusionConstants.from_config(config)
    trained = spec.target_norm(data)
    untrained = {m: (0.0, 1.0) for m in spec.maps if m not in trained}  # NaN targets: no loss
    norm = {**trained, **untrained}
    if init is not None:
        grid = np.asarray(init["times_s"], float)
        if grid.shape != np.shape(data.times_s) or not np.allclose(grid, data.times_s):
            raise ValueError(
                f"{spec.name}: the training data's time grid ({len(data.times_s)} frames) is "
                f"not that of the weights fine-tuned ({grid.size} frames)"
            )
        norm = {k: tuple(v) for k, v in init["norm"].items()}
    ctx = Context(
        device=device,
        times_s=np.asarray(data.times_s, float),
        norm=norm,
        params=params,
        kh_over_rho=constants.kh / constants.density_g_ml,
        tmax_threshold_s=float(params["lesion_tmax_s"]),
        autocast=device.type == "cuda" and torch.cuda.is_bf16_supported(),
    )
    ctx.extra["maps"] = [m for m in spec.maps if m in trained]
    if init is not None:
        ctx.extra["maps"] = [m for m in spec.maps if m in trained or m in init["maps"]]
    elif untrained:
        log.warning("%s: the reference maps lack %s: not learned", spec.name, ", ".join(untrained))
    if spec.aligns_bolus:  # the bolus timing the weights see (fine-tuned: both cohorts')
        from bolus.learn.datasets import bolus_peak_range

        lo, hi = bolus_peak_range(data)
        before = (init or {}).get("aif_peak_s") or [lo, hi]
        ctx.extra["aif_peak_s"] = [min(lo, before[0]), max(hi, before[1])]
    return ctx


def _model_record(name, spec, model_state, ctx, params) -> dict:
    return {
        "name": name,
        "maps": list(ctx.extra["maps"]),
        "params": params,
        "state": model_state,
        "norm": ctx.norm,
        "times_s": ctx.times_s.tolist(),
        "kh_over_rho": ctx.kh_over_rho,
        "tmax_threshold_s": ctx.tmax_threshold_s,
        "aif_peak_s": ctx.extra.get("aif_peak_s"),  # the slice models' bolus timing
    }


def load_init(init) -> dict | None:
    """The ``model.pt`` record of the weights to fine-tune (None: train from scratch)."""
    if init is None:
        return None
    import torch

    return torch.load(init, map_location="cpu", weights_only=False)


def train_model(
    name: str, data_dir, model_dir, config: dict | None = None, threads=None, init=None
) -> Path:
    """Train model ``name`` on the cohort data in ``data_dir``; returns ``model_dir/model.pt``.

    ``init``: a ``model.pt`` record file (the shipped weights, :mod:`bolus.weights`) to
    fine-tune: its sizes, time grid and target scales are kept, the ``training`` keys
    (epochs, learning rate, …) are this config's, and a pre-training phase is not redone."""
    import torch

    from bolus.learn.epoch import epoch_means, train_epoch, validate
    from bolus.learn.specs import get_spec, pick_device

    config = with_defaults(config)
    params = resolve_params(config, name)
    start = load_init(init)
    if start is not None:
        training_keys = set(config["training"]) | {"seed", "threads"}
        params.update({k: v for k, v in start["params"].items() if k not in training_keys})
        from bolus.weights import sha256

        params["init_sha256"] = sha256(init)
    if threads:
        torch.set_num_threads(int(threads))
        params["threads"] = int(threads)
    spec = get_spec(name)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG).write_text(
        yaml.safe_dump({"model": name, "params": params, "config": config}, sort_keys=False)
    )
    device = pick_device(str(params["device"]))
    seed = int(params["seed"])
    torch.manual_seed(seed)
    data = spec.open_data(data_dir)
    ctx = _context(spec, data, params, config, device, start)
    log.info("%s: %s on %s, %d time points", name, spec.layout, device, ctx.times_s.size)
    if spec.framework == "sklearn":
        return _fit_sklearn(name, spec, data, ctx, params, model_dir)
    if (params.get("lr_search") or {}).get("enabled"):
        from bolus.learn.lr_search import search_learning_rate

        params["lr"] = search_learning_rate(name, spec, data, ctx, params, model_dir)
        (model_dir / CONFIG).write_text(
            yaml.safe_dump({"model": name, "params": params, "config": config}, sort_keys=False)
        )

    model = spec.build(ctx.times_s.size, params).to(device)
    spec.prepare(model, data, ctx)
    if start is not None:
        model.load_state_dict(start["state"])
    optimisers = spec.optimisers(model, params)
    state = {"phase": 0, "epoch": 0, "epoch_in_phase": 0, "best": float("inf"), "stale": 0}
    history: list[dict] = []
    best_weights = copy.deepcopy(model.state_dict())
    phases = spec.phases(params)
    if start is not None:  # the shipped weights had their pre-training
        phases = [(phase, n) for phase, n in phases if phase != "pretrain"]
    checkpoint = model_dir / CHECKPOINT
    fingerprint = run_fingerprint(data_dir, params)
    saved = load_checkpoint(checkpoint, device, fingerprint)
    if saved is not None and not _continues(saved, phases):
        log.info("%s trained beyond this run's epochs: starting afresh", checkpoint)
        saved = None
    if saved is not None:
        model.load_state_dict(saved["model"])
        for optimiser, saved_state in zip(optimisers, saved["optimisers"], strict=True):
            optimiser.load_state_dict(saved_state)
        best_weights, state, history = saved["best"], saved["state"], saved["history"]
        log.info("%s: resumed from %s at epoch %d", name, checkpoint, state["epoch"])
    ctx.extra["resumed_at_epoch"] = state["epoch"]

    def save_checkpoint():
        _save_atomic(
            {"model": model.state_dict(), "optimisers": [o.state_dict() for o in optimisers],
             "best": best_weights, "state": state, "history": history,
             "fingerprint": fingerprint, "phases": phases},
            checkpoint,
        )  # fmt: skip

    patience = int(params["patience"])
    per_batch = spec.batch_size(params)
    max_batches = params.get("max_batches_per_epoch")
    while state["phase"] < len(phases):
        phase, n_epochs = phases[state["phase"]]
        source = _phase_data(phase, data, ctx, params, config)
        while state["epoch_in_phase"] < n_epochs and state["stale"] < patience:
            epoch, started = state["epoch"], time.perf_counter()
            losses = train_epoch(
                spec, model, optimisers, source, ctx, phase, per_batch, max_batches, seed, epoch
            )
            val = validate(spec, model, source, ctx, phase, per_batch, seed)
            if val < state["best"]:
                state["best"], state["stale"] = val, 0
                best_weights = copy.deepcopy(model.state_dict())
            else:
                state["stale"] += 1
            means = epoch_means(losses)
            history.append(
                {"epoch": epoch + 1, "phase": phase, "train_loss": means.pop("loss"),
                 "val_loss": val, **means, "seconds": round(time.perf_counter() - started, 3),
                 "device": device.type, "threads": torch.get_num_threads()}
            )  # fmt: skip
            log.info("%s %s epoch %d: train %.4g val %.4g", name, phase, epoch + 1,
                     history[-1]["train_loss"], val)  # fmt: skip
            state["epoch"] += 1
            state["epoch_in_phase"] += 1
            save_checkpoint()
            write_curves(history, model_dir, figure=False)  # the figure once, at the end
        if state["phase"] == len(phases) - 1:
            break  # the checkpoint stays in the last phase: more epochs continue it
        # next phase (fine-tuning) starts from this phase's best weights
        model.load_state_dict(best_weights)
        state.update(phase=state["phase"] + 1, epoch_in_phase=0, best=float("inf"), stale=0)
        save_checkpoint()
    if history:
        write_curves(history, model_dir)
    out = model_dir / MODEL
    _save_atomic(_model_record(name, spec, best_weights, ctx, params), out)
    return out


def _continues(saved: dict, phases: list) -> bool:
    """Whether a checkpoint's run is the start of one with ``phases`` [(phase, epochs)]: the
    same phases, the same epochs in those it finished, no more in the one it was in. Seeded
    per epoch, continuing it is the longer run."""
    before = [tuple(p) for p in saved.get("phases", [])]
    at, done = saved["state"]["phase"], saved["state"]["epoch_in_phase"]
    now = [tuple(p) for p in phases]
    return (
        len(before) == len(now)
        and at < len(now)
        and before[:at] == now[:at]
        and before[at][0] == now[at][0]
        and done <= now[at][1]
    )


def _phase_data(phase, data, ctx, params, config):
    if phase != "pretrain":
        return data
    cached = ctx.extra.get("pretrain_data")
    if cached is None:
        from bolus.learn.datasets import AIF_SCALE, CURVE_SCALE, ArrayData
        from bolus.simulate.voxel_curves import simulate_on_grid

        sim = simulate_on_grid(
            np.random.default_rng([int(params["seed"]), 77]),
            int(params["pretrain_curves"]),
            ctx.times_s,
            PerfusionConstants.from_config(config),
            max_delay_s=float(params["pretrain_max_delay_s"]),
            curve_scale=CURVE_SCALE,
            aif_scale=AIF_SCALE,
        )
        cached = ctx.extra["pretrain_data"] = ArrayData(sim)
        ctx.extra["pretrain"] = sim
    return cached


def _fit_sklearn(name, spec, data, ctx, params, model_dir) -> Path:
    """Random forest: one fit on (a bounded sample of) the training voxels."""
    rng = np.random.default_rng(int(params["seed"]))
    rows = data.rows("train")
    if rows.size > int(params["max_samples"]):
        rows = np.sort(rng.choice(rows, int(params["max_samples"]), replace=False))
    columns = spec.map_columns()
    mean, sd = spec.scale_np(ctx)

    def xy(rows):
        x = spec.features(
            np.asarray(data["curves"][rows]), np.asarray(data["aifs"][data["subject"][rows]])
        )
        y = (np.asarray(data["targets"][rows][:, columns]) - mean) / sd
        learned = np.isin(spec.maps, ctx.extra["maps"])
        y[:, ~learned] = 0.0  # maps the references lack: a constant, never written
        keep = np.isfinite(y).all(axis=1)
        return x[keep], y[keep]

    started = time.perf_counter()
    estimator = spec.build(ctx.times_s.size, params)
    x, y = xy(rows)
    estimator.fit(x, y)
    xv, yv = xy(data.rows("val")[:50_000])
    val = float(np.mean(np.abs(estimator.predict(xv) - yv))) if len(xv) else float("nan")
    train = float(np.mean(np.abs(estimator.predict(x[:50_000]) - y[:50_000])))
    history = [{"epoch": 1, "phase": "fit", "train_loss": train, "val_loss": val,
                "seconds": round(time.perf_counter() - started, 3), "device": "cpu",
                "threads": int(estimator.n_jobs or 1)}]  # fmt: skip
    write_curves(history, model_dir)
    out = model_dir / MODEL
    record = _model_record(name, spec, None, ctx, params)
    record["estimator"] = estimator
    _save_atomic(record, out)
    return out
