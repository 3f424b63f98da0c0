"""pix2pix (Kossen et al.) in the workflow: TOF training data, adversarial training, prediction.

Training data (``<output_dir>/models/data/tof/``, written once per cohort)
    one row per train/val subject that completed the TOF stage, every volume on its own DSC
    grid zero-padded to the cohort's largest: ``tof`` (S, X, Y, Z) float32, the coregistered
    TOF divided by its 99.5th percentile in the brain (:func:`bolus.models.pix2pix.normalise_tof`);
    ``targets`` (S, 5, X, Y, Z) float32, the reference maps (CBF, CBV, MTT, Tmax, TTP) on the
    DSC grid in their units, NaN where undefined; ``mask`` (S, X, Y, Z) bool (brain, every
    map defined); ``split`` (S,) uint8 (0 train, 1 val); ``meta.json``: subjects, splits,
    shapes. Memory-mapped (``numpy.lib.format.open_memmap``), one subject in memory at a time.

Training (:func:`train_pix2pix`, called by :func:`bolus.learn.train.train_model`)
    two Adam optimisers (β1 0.5), generator and discriminator, one discriminator then one
    generator update per subject volume (batch of one, as in Kossen et al.); loss
    BCE + ``l1_weight``·L1 (:mod:`bolus.models.pix2pix`). Like every model: seeds from
    ``seed`` re-set every epoch, ``checkpoint.pt`` (both networks, both optimisers, best
    weights, history) written after every epoch and resumed from, early stopping when the
    validation L1 (generator output against the reference in the normalised [−1, 1] units,
    over the mask) has not improved for ``patience`` epochs, ``curves.tsv``/``curves.png``,
    ``config.yaml`` and ``model.pt``. Validation subjects: the ``val`` split; without one,
    every 5th training subject when there are five or more, else the training subjects
    themselves (a small cohort: the curve then shows fit, not generalisation).

BatchNorm uses the statistics of the volume at hand, in training and at prediction alike
(Isola et al. 2017 apply batch norm with test-batch statistics; with batches of one volume,
running averages over few subjects would be unreliable), so no running statistics are kept.

Prediction (:func:`predict_stage`): the subject's coregistered TOF and brain mask → the five
maps, ``sub-XX_desc-pix2pix_<map>.nii.gz`` in the native DSC grid (0 outside the brain mask).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np

from bolus import paths
from bolus.io.errors import SubjectError

log = logging.getLogger("bolus.learn")

MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp")
SPLIT_CODES = {"train": 0, "val": 1}


# ----------------------------------------------------------------------------- data
def load_tof_subject(output_dir, participant_id: str, normalise: bool = True):
    """(coregistered TOF, normalised unless ``normalise`` is False; brain mask; DSC affine)
    of one subject."""
    from bolus.io.nifti import load_volume
    from bolus.models.pix2pix import normalise_tof

    sp = paths.SubjectPaths(output_dir, participant_id)
    for path in (sp.coreg_tof, sp.brain_mask):
        if not path.exists():
            raise SubjectError(participant_id, path, "missing (run the TOF stage first)")
    mask_data, affine = load_volume(sp.brain_mask)
    mask = mask_data > 0
    tof, _ = load_volume(sp.coreg_tof)
    if tof.shape != mask.shape:
        raise SubjectError(
            participant_id, sp.coreg_tof, f"shape {tof.shape} is not the DSC grid's {mask.shape}"
        )
    try:
        return (normalise_tof(tof, mask) if normalise else tof), mask, affine
    except ValueError as exc:
        raise SubjectError(participant_id, sp.coreg_tof, str(exc)) from exc


def write_tof_training_data(
    data_dir, output_dir, rows: list[dict], reference_registration: bool = False
) -> Path:
    """Write the TOF layout for the train/val ``rows``; returns ``data_dir/meta.json``.
    ``reference_registration``: reference maps registered onto the DSC grid (config key)."""
    import nibabel as nib

    from bolus.evaluate.reference import load_reference_maps

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(
        (r for r in rows if r["split"] in SPLIT_CODES),
        key=lambda r: (r["split"] != "train", r["participant_id"]),
    )
    if not any(r["split"] == "train" for r in rows):
        raise ValueError("no `train` subject to learn from (participants.tsv split column)")
    shapes = [
        nib.load(str(paths.SubjectPaths(output_dir, r["participant_id"]).brain_mask)).shape[:3]
        for r in rows
    ]
    big = tuple(int(max(s[i] for s in shapes)) for i in range(3))
    n = len(rows)

    def alloc(name, shape, dtype):
        return np.lib.format.open_memmap(data_dir / f"{name}.npy", "w+", dtype, shape)

    tof = alloc("tof", (n, *big), np.float32)
    targets = alloc("targets", (n, len(MAPS), *big), np.float32)
    mask = alloc("mask", (n, *big), np.bool_)
    split = alloc("split", (n,), np.uint8)
    for i, r in enumerate(rows):
        pid = r["participant_id"]
        volume, brain, affine = load_tof_subject(output_dir, pid)
        if not r.get("reference_dir"):
            raise SubjectError(pid, None, "a training subject needs reference_dir")
        register_onto = paths.SubjectPaths(output_dir, pid).conc if reference_registration else None
        found = load_reference_maps(r["reference_dir"], brain.shape, affine, register_onto)
        missing = [m for m in MAPS if m not in found]
        if missing:
            raise SubjectError(pid, r["reference_dir"], f"no reference {', '.join(missing)}")
        x, y, z = brain.shape
        stack = np.stack([found[m] for m in MAPS])
        defined = brain & np.isfinite(stack).all(axis=0)
        tof[i] = 0.0
        tof[i, :x, :y, :z] = volume
        targets[i] = np.nan
        targets[i, :, :x, :y, :z] = np.where(defined, stack, np.nan)
        mask[i] = False
        mask[i, :x, :y, :z] = defined
        split[i] = SPLIT_CODES[r["split"]]
    for array in (tof, targets, mask, split):
        array.flush()
    meta = {
        "status": "ok",
        "layout": "tof",
        "maps": list(MAPS),
        "subjects": [r["participant_id"] for r in rows],
        "splits": [r["split"] for r in rows],
        "shapes": [list(map(int, s)) for s in shapes],
    }
    out = data_dir / "meta.json"
    out.write_text(json.dumps(meta, indent=2) + "\n")
    return out


def tof_training_data_stage(rows, output_dir, out_meta, *, registration: bool = False) -> Path:
    """The workflow rule's call: rows whose TOF or perfusion stage did not succeed are left
    out; when no train subject is left (no TOF-MRA, no reference maps), ``meta.json`` says
    why and pix2pix is skipped."""
    from bolus.learn.stages import usable_rows, write_data_verdict

    logging.getLogger("bolus.learn").setLevel(logging.INFO)
    usable = usable_rows(usable_rows(rows, output_dir, "perfusion"), output_dir, "tof")
    if not any(r.get("split") == "train" for r in usable):
        return write_data_verdict(
            out_meta, "skipped", "no `train` subject with a TOF-MRA completed the TOF stage"
        )
    try:
        return write_tof_training_data(Path(out_meta).parent, output_dir, usable, registration)
    except SubjectError as exc:  # e.g. a reference without all five maps
        return write_data_verdict(out_meta, "skipped", f"pix2pix needs all five maps: {exc}")


class TOFData:
    """Read-only memory maps of the TOF layout."""

    def __init__(self, data_dir):
        data_dir = Path(data_dir)
        self.meta = json.loads((data_dir / "meta.json").read_text())
        self.arrays = {p.stem: np.load(p, mmap_mode="r") for p in sorted(data_dir.glob("*.npy"))}

    def rows(self, split: str) -> np.ndarray:
        codes = np.asarray(self.arrays["split"])
        train = np.flatnonzero(codes == SPLIT_CODES["train"])
        val = np.flatnonzero(codes == SPLIT_CODES["val"])
        if val.size == 0 and train.size >= 5:
            held = np.arange(train.size) % 5 == 0
            train, val = train[~held], train[held]
        elif val.size == 0:
            val = train
        return train if split == "train" else val

    def example(self, row: int, scales, depth: int):
        """(tof (1, X', Y', Z'), targets (5, …) in [−1, 1], mask (1, …)) padded, tensors."""
        import torch

        from bolus.models.pix2pix import normalise_targets, pad_to_multiple

        multiple = 2**depth
        target = np.asarray(self.arrays["targets"][row])
        maps = {m: target[i] for i, m in enumerate(MAPS)}
        x, _ = pad_to_multiple(np.asarray(self.arrays["tof"][row])[None], multiple)
        y, _ = pad_to_multiple(normalise_targets(maps, scales), multiple)
        m, _ = pad_to_multiple(np.asarray(self.arrays["mask"][row], np.float32)[None], multiple)
        return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in (x, y, m))


# ----------------------------------------------------------------------------- model
def batch_statistics(model):
    """BatchNorm on the statistics of the volume at hand, in training and evaluation alike
    (no running statistics kept; see the module docstring)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return model


def build(params):
    from bolus.models.pix2pix import Pix2Pix3D

    return batch_statistics(Pix2Pix3D(int(params["base"]), int(params["depth"]), MAPS))


def _val_l1(model, data, rows, scales, depth, device) -> float:
    import torch

    from bolus.models.pix2pix import _masked_l1

    model.eval()
    total = 0.0
    with torch.no_grad():
        for row in rows:
            x, y, m = (v[None].to(device) for v in data.example(int(row), scales, depth))
            total += float(_masked_l1(model.generator(x), y, m))
    return total / max(len(rows), 1)


def train_pix2pix(name, spec, data_dir, model_dir, params, config, device) -> Path:
    """Adversarial training with checkpoints, resume and early stopping (module docstring)."""
    import torch

    from bolus.learn.train import (
        CHECKPOINT,
        MODEL,
        _save_atomic,
        load_checkpoint,
        run_fingerprint,
        write_curves,
    )
    from bolus.models.pix2pix import fit_scales, optimisers, training_step

    model_dir = Path(model_dir)
    data = TOFData(data_dir)
    seed, depth = int(params["seed"]), int(params["depth"])
    torch.manual_seed(seed)
    model = build(params).to(device)
    opt_g, opt_d = optimisers(model, float(params["lr"]))
    train_rows, val_rows = data.rows("train"), data.rows("val")
    targets = np.asarray(data.arrays["targets"][train_rows])
    masks = np.asarray(data.arrays["mask"][train_rows])
    scales = fit_scales([{m: t[i] for i, m in enumerate(MAPS)} for t in targets], list(masks), MAPS)
    del targets, masks
    model.scales.copy_(torch.from_numpy(scales))
    state = {"epoch": 0, "best": float("inf"), "stale": 0}
    history: list[dict] = []
    best = copy.deepcopy(model.state_dict())
    checkpoint = model_dir / CHECKPOINT
    fingerprint = run_fingerprint(data_dir, params)
    saved = load_checkpoint(checkpoint, device, fingerprint)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt_g.load_state_dict(saved["opt_g"])
        opt_d.load_state_dict(saved["opt_d"])
        best, state, history = saved["best"], saved["state"], saved["history"]
        log.info("%s: resumed from %s at epoch %d", name, checkpoint, state["epoch"])
    scales = model.scales.cpu().numpy()
    l1_weight = float(params["l1_weight"])
    epochs, patience = int(params["epochs"]), int(params["patience"])
    log.info("%s: %d train, %d val volumes on %s", name, train_rows.size, val_rows.size, device)
    while state["epoch"] < epochs and state["stale"] < patience:
        epoch, started = state["epoch"], time.perf_counter()
        torch.manual_seed(seed * 1000 + epoch)
        sums: dict[str, float] = {}
        for row in np.random.default_rng([seed, epoch]).permutation(train_rows):
            x, y, m = (v[None].to(device) for v in data.example(int(row), scales, depth))
            for k, v in training_step(model, opt_g, opt_d, x, y, m, l1_weight).items():
                sums[k] = sums.get(k, 0.0) + v / train_rows.size
        val = _val_l1(model, data, val_rows, scales, depth, device)
        if val < state["best"]:
            state["best"], state["stale"] = val, 0
            best = copy.deepcopy(model.state_dict())
        else:
            state["stale"] += 1
        history.append(
            {"epoch": epoch + 1, "phase": "train", "train_loss": sums.get("l1", float("nan")),
             "val_loss": val, "g_adversarial": sums.get("g_adversarial", float("nan")),
             "d_loss": sums.get("d", float("nan")),
             "seconds": round(time.perf_counter() - started, 3)}
        )  # fmt: skip
        log.info("%s epoch %d: L1 train %.4g val %.4g, D %.3g", name, epoch + 1,
                 history[-1]["train_loss"], val, history[-1]["d_loss"])  # fmt: skip
        state["epoch"] += 1
        _save_atomic(
            {"model": model.state_dict(), "opt_g": opt_g.state_dict(),
             "opt_d": opt_d.state_dict(), "best": best, "state": state, "history": history,
             "fingerprint": fingerprint},
            checkpoint,
        )  # fmt: skip
        write_curves(history, model_dir, figure=False)
    if history:
        write_curves(history, model_dir)
    record = {"name": name, "maps": list(MAPS), "params": params, "state": best,
              "layout": "tof", "norm": {}, "times_s": [],
              "scales": scales.tolist()}  # fmt: skip
    out = model_dir / MODEL
    _save_atomic(record, out)
    return out


def load_model(model_file, device="cpu"):
    import torch

    record = torch.load(model_file, map_location=device, weights_only=False)
    model = build(record["params"])
    model.load_state_dict(record["state"])
    return model.to(device).eval()


def predict_subject(model_file, output_dir, subject, device="auto", threads=None) -> list[Path]:
    """Predict one subject's five maps from its coregistered TOF; returns the written paths."""
    import torch

    from bolus.io.nifti import save_like
    from bolus.learn.train import pick_device
    from bolus.models.pix2pix import predict_subject as predict

    logging.getLogger("bolus.learn").setLevel(logging.INFO)
    if threads:
        torch.set_num_threads(int(threads))
    device = pick_device(str(device))
    model = load_model(model_file, device)
    tof, mask, affine = load_tof_subject(output_dir, subject, normalise=False)
    started = time.perf_counter()
    maps = predict(model, tof, mask)
    log.info("%s: pix2pix prediction %.2f s on %s", subject, time.perf_counter() - started, device)
    written = []
    for name, path in paths.SubjectPaths(output_dir, subject).maps("pix2pix").items():
        save_like(maps[name], affine, path)
        written.append(Path(path))
    return written
