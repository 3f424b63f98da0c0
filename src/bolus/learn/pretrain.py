"""``bolus pretrain``: the recipe of the shipped weights (:mod:`bolus.weights`).

A shipped model learns from simulated voxels, each its own acquisition drawn across DSC
and CT perfusion protocols (:data:`bolus.simulate.voxel_curves.ACROSS_PROTOCOLS`:
sampling interval 0.5–2.5 s, 40–150 frames, TE 20–50 ms, SNR 15–200, AIF shape, peak,
arrival and partial-volume scale, delay −2…+10 s, dispersion, CBF 2–120 ml/100 g/min,
MTT 1.5–20 s, the gamma residue family). Its targets are what the curves identify (CBF and
CBV relative to the measured AIF's scale, MTT, Tmax, TTP).

The recipe goes through the engine every cohort model uses: the simulated voxels are
written as the ``voxels`` training layout (:mod:`bolus.learn.datasets`) on the shipped time
grid :data:`GRID_S`, and :func:`bolus.learn.train.train_model` trains on them (seeded,
checkpointed after every epoch, resumed when stopped). Every subject is resampled onto
:data:`GRID_S` at prediction (:func:`bolus.learn.datasets.model_inputs`), which is how a
shipped model takes the sampling interval into account.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bolus import paths
from bolus.config import PerfusionConstants

log = logging.getLogger("bolus.learn")

#: the time grid of every shipped model (s from the first frame): 120 frames at 1 s
GRID_S = np.arange(120, dtype=float)
#: pretraining voxels held out for validation: every VAL_EVERY-th
VAL_EVERY = 10
SEED = 2026

#: per model: simulated voxels and the parameters (over the config schema's defaults)
#: ``data``: ``voxels`` (:func:`write_pretraining_data`, ``size`` voxels) or ``cohort``
#: (:func:`write_pretraining_cohort`, ``size`` subjects, shared by the models that use it)
RECIPES: dict[str, dict] = {
    "mlp": {
        "data": "voxels",
        "size": 1_000_000,
        "params": {
            "hidden": [256, 256, 128],
            "epochs": 40,
            "batch_size": 1024,
            "lr": 0.001,
            "patience": 6,
            "relative_loss": "log",
        },
    },
    # pre-training on simulated curves with their local AIF and delay (its own phase), then
    # the maps on the across-protocol voxels. Tokens of 8 s (kernel 16, stride 8): 15 on
    # the 120-frame grid, as many as the schema's 4-sample stride gives a 60-frame subject
    # (stride 4 there: 30 tokens, inference ≈ 3× slower)
    "transformer": {
        "data": "voxels",
        "size": 100_000,
        "params": {
            "patch": 16,
            "stride": 8,
            "pretrain_curves": 50_000,
            "pretrain_epochs": 4,
            "epochs": 24,
            "batch_size": 256,
            "lr": 0.0005,
            "patience": 3,
            "relative_loss": "log",
        },
    },
    "talebi": {
        "data": "cohort",
        "size": 80,
        "params": {
            "epochs": 20,
            "slices_per_batch": 8,
            "lr": 0.001,
            "patience": 5,
            "relative_loss": "log",
        },  # fmt: skip
    },
    # ST-Net reads the 1 s × 120 grid as 2 s × 60 (frame_pool 2): its two encoders cost per
    # frame, and at 120 frames it predicts a subject about 2.3× slower. 16 epochs of 4-slice
    # steps (2,560 steps): Tmax's timing head learns with the step count (README, "stnet":
    # the recipe's time and learning curve)
    "stnet": {
        "data": "cohort",
        "size": 80,
        "params": {
            "frame_pool": 2,
            "epochs": 16,
            "slices_per_batch": 4,
            "lr": 0.001,
            "patience": 5,
            "relative_loss": "log",
        },  # fmt: skip
    },
}
# talebi_truncated is talebi's network fed the first 40 frames: the same recipe
RECIPES["talebi_truncated"] = RECIPES["talebi"]


def write_pretraining_data(data_dir, n_voxels: int, seed: int = SEED, *, chunk=8192) -> Path:
    """Simulate ``n_voxels`` voxels across protocols into the ``voxels`` layout of
    ``data_dir`` (curves and one AIF per voxel on :data:`GRID_S`, targets in
    :data:`bolus.paths.MAPS` order); every :data:`VAL_EVERY`-th is validation. Written one
    chunk at a time; returns ``meta.json`` (which names the draws, so a checkpoint of other
    data is not resumed)."""
    from bolus.learn.datasets import AIF_SCALE, CURVE_SCALE, SPLIT_CODES, _alloc
    from bolus.simulate.voxel_curves import ACROSS_PROTOCOLS, simulate_on_grid

    data_dir = Path(data_dir)
    folder = data_dir / "voxels"
    folder.mkdir(parents=True, exist_ok=True)
    n, t = int(n_voxels), GRID_S.size
    arrays = {
        "curves": _alloc(folder, "curves", (n, t), np.float32),
        "aifs": _alloc(folder, "aifs", (n, t), np.float32),
        "targets": _alloc(folder, "targets", (n, len(paths.MAPS)), np.float32),
        "subject": _alloc(folder, "subject", (n,), np.int32),
        "lesion": _alloc(folder, "lesion", (n,), np.bool_),
        "split": _alloc(folder, "split", (n,), np.uint8),
    }
    rng = np.random.default_rng([int(seed), 16])
    constants = PerfusionConstants.from_config()
    for at in range(0, n, chunk):
        m = min(chunk, n - at)
        sim = simulate_on_grid(
            rng, m, GRID_S, constants, max_delay_s=None, ranges=ACROSS_PROTOCOLS,
            curve_scale=CURVE_SCALE, aif_scale=AIF_SCALE, chunk=2048,
        )  # fmt: skip
        rows = slice(at, at + m)
        arrays["curves"][rows] = sim["curves"]
        arrays["aifs"][rows] = sim["aif"]
        arrays["targets"][rows] = np.column_stack([sim[name] for name in paths.MAPS])
        arrays["subject"][rows] = np.arange(at, at + m)
        arrays["lesion"][rows] = sim["tmax"] > 6.0
        index = np.arange(at, at + m)
        arrays["split"][rows] = np.where(
            index % VAL_EVERY == 0, SPLIT_CODES["val"], SPLIT_CODES["train"]
        )
    for array in arrays.values():
        array.flush()
    meta = {
        "status": "ok",
        "times_s": GRID_S.tolist(),
        "maps": list(paths.MAPS),
        "simulated": {"voxels": n, "seed": int(seed), "ranges": asdict(ACROSS_PROTOCOLS)},
        "n_voxels": n,
    }
    path = data_dir / "meta.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


#: the simulated subjects' matrix and the share of CT perfusion subjects among them
COHORT_MATRIX = (64, 64, 8)
CTP_FRACTION = 0.3


def draw_acquisition(rng: np.random.Generator) -> dict:
    """One subject's protocol, drawn across the ranges of the module docstring: DSC or CT
    perfusion, sampling interval, frames (at least 60 s of acquisition), TE, SNR, arterial
    peak, pathology."""
    tr = float(rng.uniform(0.5, 2.5))
    frames = int(round(np.exp(rng.uniform(np.log(40), np.log(150)))))
    return {
        "modality": "ctp" if rng.random() < CTP_FRACTION else "dsc",
        "pathology": str(rng.choice(["healthy", "stroke", "stroke", "tumour"])),
        "n_timepoints": max(frames, int(np.ceil(60.0 / tr)) + 1),
        "tr_s": tr,
        "te_s": float(rng.uniform(0.020, 0.050)),
        "snr": float(np.exp(rng.uniform(np.log(15.0), np.log(200.0)))),
        "aif_peak_r2s": tuple(sorted(rng.uniform(20.0, 90.0, 2).round(1))),
        "ctp_noise_hu": float(rng.uniform(1.0, 6.0)),
    }


def simulate_processed_subject(out_dir, number: int, seed: int, rng) -> dict | None:
    """Simulate subject ``number`` with a drawn protocol and process it with the workflow's
    own stages (``preprocess_subject`` without motion correction, ``perfusion_subject``)
    into ``out_dir``; returns its row (reference_dir = its truth maps), or None when the
    pipeline rejects it (no bolus found at that dose and noise: logged)."""
    import json as _json

    import nibabel as nib

    from bolus.io.errors import SubjectError
    from bolus.simulate.cohort import simulate_subject, write_truth
    from bolus.simulate.ctp import ctp_series
    from bolus.stages import perfusion_subject, preprocess_subject

    acq = draw_acquisition(rng)
    pid = f"sub-{number:04d}"
    sim = simulate_subject(
        seed, number, acq["pathology"], matrix=COHORT_MATRIX, n_timepoints=acq["n_timepoints"],
        tr_s=acq["tr_s"], te_s=acq["te_s"], snr=acq["snr"], aif_peak_r2s=acq["aif_peak_r2s"],
    )  # fmt: skip
    sp = paths.SubjectPaths(out_dir, pid)
    sp.dsc.parent.mkdir(parents=True, exist_ok=True)
    series = sim.signal
    sidecar = {"RepetitionTime": sim.tr_s, "VolumeTiming": [float(t) for t in sim.time_s]}
    if acq["modality"] == "ctp":
        series = ctp_series(sim, rng, noise_hu=acq["ctp_noise_hu"], motion=False)
    else:
        sidecar["EchoTime"] = sim.te_s
    nib.save(nib.Nifti1Image(series.astype(np.float32), sim.phantom.grid.affine_ras), sp.dsc)
    sp.dsc_json.write_text(_json.dumps(sidecar))
    truth = Path(out_dir) / "truth" / pid
    write_truth(truth, sim, extra={"acquisition": acq})
    try:
        preprocess_subject(sp, {"enabled": False})
        perfusion_subject(sp, modality=acq["modality"])
    except SubjectError as exc:
        log.warning("%s left out: %s", pid, exc)
        return None
    return {"participant_id": pid, "reference_dir": str(truth), "acquisition": acq}


def processed_subjects(work, n_subjects: int, seed: int):
    """Yield (number, row or None) for subjects 1…``n_subjects`` of the phantom cohort of
    ``seed``, simulated and processed into ``work`` (:func:`simulate_processed_subject`)."""
    rng = np.random.default_rng([int(seed), 64])
    for number in range(1, int(n_subjects) + 1):
        yield number, simulate_processed_subject(work, number, seed, rng)


def write_pretraining_cohort(data_dir, n_subjects: int, seed: int = SEED) -> Path:
    """A simulated cohort of ``n_subjects`` (each its own protocol, :func:`draw_acquisition`)
    processed by the workflow's stages, written as both training layouts on :data:`GRID_S`
    by the writer cohort training uses (:func:`bolus.learn.datasets.write_training_data`);
    every 10th subject is validation. Returns ``meta.json``."""
    from bolus.learn.datasets import write_training_data

    data_dir = Path(data_dir)
    work = data_dir / "cohort"
    rows = []
    for number, row in processed_subjects(work, n_subjects, seed):
        if row is not None:
            row["split"] = "val" if number % VAL_EVERY == 0 else "train"
            rows.append(row)
        log.info("simulated subject %d of %d", number, n_subjects)
    meta = write_training_data(
        data_dir, work, rows, voxels_per_subject=None, tmax_threshold_s=6.0, seed=int(seed),
        grid_s=GRID_S,
    )  # fmt: skip
    record = json.loads(meta.read_text())
    record["simulated"] = {"subjects": int(n_subjects), "seed": int(seed),
                           "acquisitions": [r["acquisition"] for r in rows]}  # fmt: skip
    meta.write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)  # the layouts hold all the training reads
    return meta


def pretrain(model: str, out_dir, *, device: str = "auto", threads=None, size=None,
             epochs=None, seed: int = SEED) -> Path:  # fmt: skip
    """Make ``out_dir/<model>.pt`` and its manifest ``<model>.json`` (the files
    :mod:`bolus.weights` ships) from the simulator with ``seed``. The training data are
    written once (``out_dir/data-…``, kept for the next run and the other models of the
    same data); training resumes from its checkpoint (``out_dir/<model>/``) when stopped.
    ``size`` (voxels or subjects) and ``epochs`` override the recipe (a quick trial: the
    manifest records what was used)."""
    from bolus.learn.train import resolve_params, train_model
    from bolus.weights import manifest_file, sha256, weights_file

    if model not in RECIPES:
        raise ValueError(f"no pretraining recipe for {model!r} (recipes: {', '.join(RECIPES)})")
    recipe = {**RECIPES[model], "params": dict(RECIPES[model]["params"])}
    if size:
        recipe["size"] = int(size)
    if epochs:
        recipe["params"]["epochs"] = int(epochs)
    out = Path(out_dir)
    kind = recipe["data"]
    data_dir = out / (f"data-{model}" if kind == "voxels" else f"data-cohort-{recipe['size']}")
    meta = data_dir / "meta.json"
    made = json.loads(meta.read_text()).get("simulated", {}) if meta.exists() else {}
    if (
        made.get("seed") != int(seed)
        or made.get("voxels" if kind == "voxels" else "subjects") != recipe["size"]
    ):
        log.info("%s: simulating %d %s across protocols", model, recipe["size"], kind)
        if kind == "voxels":
            write_pretraining_data(data_dir, recipe["size"], seed)
        else:
            write_pretraining_cohort(data_dir, recipe["size"], seed)
    config = {
        "seed": int(seed),
        "training": {"device": device, **{k: v for k, v in recipe["params"].items()
                                           if k in _training_keys()}},
        "model_params": {model: recipe["params"]},
    }  # fmt: skip
    record = train_model(model, data_dir, out / model, config, threads=threads)
    target = weights_file(model, out)
    shutil.copyfile(record, target)
    import pandas as pd

    curves = pd.read_csv(out / model / "curves.tsv", sep="\t")  # every epoch, resumed or not
    best = _best_epoch(curves)
    manifest = {
        "model": model,
        "file": target.name,
        "sha256": sha256(target),
        "bytes": target.stat().st_size,
        "maps": _maps(record),
        "grid_s": {
            "start": float(GRID_S[0]),
            "step": float(GRID_S[1] - GRID_S[0]),
            "frames": int(GRID_S.size),
        },  # fmt: skip
        "recipe": recipe,
        "params": resolve_params(config, model),
        "seed": int(seed),
        "trained": {  # of every epoch, resumed runs included (curves.tsv)
            "device": _one_or_all(curves, "device"),
            "threads": _one_or_all(curves, "threads"),
            "epochs": len(curves),
            "seconds": round(float(curves["seconds"].sum())),
            "best_epoch": int(best["epoch"]),
            "best_val_loss": float(best["val_loss"]),  # of the last phase (its own loss)
        },  # fmt: skip
        "command": f"bolus pretrain {model} --out DIR --seed {seed}",
    }
    manifest_file(model, out).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    log.info("%s: wrote %s (%d bytes)", model, target, manifest["bytes"])
    return target


def _best_epoch(curves):
    """The row of ``curves`` (curves.tsv) whose weights the run kept: the last phase's
    lowest validation loss. A pre-training phase's loss is another quantity (transformer:
    the simulation's known local AIF and delay), not comparable with the maps' loss."""
    final = curves[curves["phase"] == curves["phase"].iloc[-1]] if "phase" in curves else curves
    return final.loc[final["val_loss"].idxmin()]


def _one_or_all(curves, name: str):
    """``curves[name]`` of every epoch that recorded it (epochs of a checkpoint from before
    the record have none): one value, the distinct values in order of first use, or None."""
    column = curves[name].dropna().tolist() if name in curves else []
    values = list(dict.fromkeys(int(v) if name == "threads" else v for v in column))
    return values[0] if len(values) == 1 else (values or None)


def _training_keys() -> set[str]:
    from bolus.config import section

    return set(section("training", None))


def _maps(record) -> list[str]:
    from bolus.learn.stages import trained_maps

    return trained_maps(record)


def install(model: str, out_dir) -> Path:
    """Copy ``out_dir``'s ``<model>.pt`` and manifest into the package (what a developer
    does after ``bolus pretrain``)."""
    from bolus.weights import WEIGHTS_DIR, manifest_file, verified, weights_file

    verified(model, out_dir)
    for f in (weights_file, manifest_file):
        shutil.copyfile(f(model, out_dir), f(model, WEIGHTS_DIR))
    return weights_file(model, WEIGHTS_DIR)


def held_out_scores(model_file, n_voxels: int = 20_000, seed: int = 99, ranges=None) -> dict:
    """A model's accuracy on voxels simulated with ``seed`` (not the training seed) from
    ``ranges`` (default :data:`~bolus.simulate.voxel_curves.ACROSS_PROTOCOLS`), on its own
    time grid: per map, the median |estimate/truth − 1| and median estimate/truth (CBF,
    CBV, MTT), the Pearson r and the median absolute error (s for Tmax, TTP)."""
    from bolus.learn.datasets import AIF_SCALE, CURVE_SCALE
    from bolus.learn.predict import load_trained
    from bolus.simulate.voxel_curves import ACROSS_PROTOCOLS, simulate_on_grid

    spec, model, ctx = load_trained(model_file, "cpu")
    sim = simulate_on_grid(
        np.random.default_rng([int(seed), 17]), n_voxels, ctx.times_s,
        PerfusionConstants.from_config(), max_delay_s=None,
        ranges=ranges or ACROSS_PROTOCOLS, curve_scale=CURVE_SCALE, aif_scale=AIF_SCALE,
    )  # fmt: skip
    out = spec.voxel_outputs(model, sim["curves"], sim["aif"], ctx)
    return _scores(
        {name: out[:, i] for i, name in enumerate(spec.maps) if name in ctx.extra["maps"]}, sim
    )


def held_out_cohort_scores(model_file, n_subjects: int = 3, seed: int = 99, work_dir=None) -> dict:
    """A model's accuracy on ``n_subjects`` phantoms simulated with ``seed`` (each its own
    drawn protocol, :func:`draw_acquisition`) and processed by the workflow's stages, as the
    slice models' recipe makes its data: the maps predicted from each subject's pipeline
    outputs (:func:`bolus.learn.predict.predict_maps`) against its truth, over the brain
    mask's voxels pooled over subjects; the keys of :func:`held_out_scores`. ``work_dir``
    keeps the simulated subjects (a temporary folder otherwise)."""
    import tempfile

    from bolus.learn.datasets import load_subject, reference_targets
    from bolus.learn.predict import load_trained, predict_maps

    spec, model, ctx = load_trained(model_file, "cpu")
    learned = [name for name in spec.maps if name in ctx.extra["maps"]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir or tmp)
        est, truth = {m: [] for m in learned}, {m: [] for m in learned}
        for _, row in processed_subjects(work, n_subjects, seed):
            if row is None:
                continue
            subject = load_subject(work, row["participant_id"])
            maps = predict_maps(spec, model, ctx, subject)
            ref = reference_targets(subject, row["reference_dir"])
            for name in learned:
                values = ref[..., paths.MAPS.index(name)]
                inside = subject.mask & np.isfinite(values)
                est[name].append(maps[name][inside])
                truth[name].append(values[inside])
    return _scores(
        {m: np.concatenate(v) for m, v in est.items()},
        {m: np.concatenate(v) for m, v in truth.items()},
    )


def _scores(estimates: dict, truths: dict) -> dict:
    """Per map of ``estimates``: Pearson r and median |error| against ``truths``, and for
    CBF, CBV, MTT the median |estimate/truth − 1| and median estimate/truth."""
    scores = {}
    for name, est in estimates.items():
        est, truth = np.asarray(est, float), np.asarray(truths[name], float)
        record = {
            "r": float(np.corrcoef(est, truth)[0, 1]),
            "median_abs_error": float(np.median(np.abs(est - truth))),
        }
        if name in ("cbf", "cbv", "mtt"):
            record["median_abs_relative_error"] = float(np.median(np.abs(est / truth - 1)))
            record["median_ratio"] = float(np.median(est / truth))
        scores[name] = record
    return scores
