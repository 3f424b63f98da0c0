"""The file layer of the learned models: one function per workflow rule.

The Snakemake scripts (``scripts/training_data.py``, ``train_model.py``,
``predict_model.py``) are thin calls of these; tests call them directly. Each takes the
config sections it reads (``training``, ``model_params.<model>``, ``seed``, …), so the rules
can carry exactly those.

A model that cannot be trained never stops the cohort: the training data record why they
could not be written (``meta.json``: ``status``, ``reason``), the training job always
leaves a verdict (:func:`bolus.paths.model_verdict`: ``ok`` with the maps it learned,
``skipped`` with the reason, or ``failed`` with the error), and each prediction reads that
verdict first.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

from bolus import paths
from bolus.config import section
from bolus.io import atomic

log = logging.getLogger("bolus.learn")


def _verbose() -> None:
    log.setLevel(logging.INFO)


def usable_rows(rows, output_dir, stage: str) -> list[dict]:
    """The rows whose ``stage`` verdict is ok (the others are logged and left out)."""
    from bolus.qc import read_verdict

    usable = []
    for row in rows:
        verdict = paths.verdict(output_dir, row["participant_id"], stage)
        if verdict.exists() and read_verdict(verdict).get("status") == "ok":
            usable.append(row)
        else:
            log.warning("%s: left out of the training data (%s stage not ok)",
                        row["participant_id"], stage)  # fmt: skip
    return usable


def write_data_verdict(out_meta, status: str, reason: str) -> Path:
    """``meta.json`` of training data that could not be written: why (read by the training
    jobs, which then leave a ``skipped`` verdict)."""
    log.warning("no training data: %s", reason)
    return atomic.write_json(out_meta, {"status": status, "reason": reason})


def read_data_verdict(meta) -> dict:
    record = json.loads(Path(meta).read_text())
    return {"status": record.get("status", "ok"), "reason": record.get("reason", "")}


def training_data_stage(
    rows,
    output_dir,
    out_meta,
    *,
    training=None,
    seed: int = 0,
    registration: bool = False,
    grid=None,
) -> Path:
    """Write the cohort's memory-mapped training data; ``out_meta`` is its ``meta.json``.

    Rows whose subject did not complete the perfusion stage (verdict not ok) are left out;
    with no train subject left, ``meta.json`` says so and every model is skipped. ``grid``:
    the time grid (s from the first frame; None: the first training subject's)."""
    from bolus.io.errors import SubjectError
    from bolus.learn.datasets import write_training_data

    _verbose()
    training = section("training", training)
    usable = usable_rows(rows, output_dir, "perfusion")
    if not any(r.get("split") == "train" for r in usable):
        return write_data_verdict(
            out_meta, "skipped",
            "no `train` subject with reference maps completed the perfusion stage",
        )  # fmt: skip
    try:
        return write_training_data(
            Path(out_meta).parent,
            output_dir,
            usable,
            voxels_per_subject=training["voxels_per_subject"],
            tmax_threshold_s=float(training["lesion_tmax_s"]),
            seed=seed,
            reference_registration=registration,
            grid_s=grid,
        )
    except SubjectError as exc:  # a training subject's reference is unusable
        return write_data_verdict(out_meta, "skipped", str(exc))


def tof_training_data_stage(rows, output_dir, out_meta, *, registration: bool = False) -> Path:
    """pix2pix's training data (:func:`bolus.learn.tof.write_tof_training_data`): rows whose
    TOF or perfusion stage did not succeed are left out; when no train subject is left (no
    TOF-MRA, no reference maps), ``meta.json`` says why and pix2pix is skipped."""
    from bolus.io.errors import SubjectError
    from bolus.learn.tof import write_tof_training_data

    _verbose()
    usable = usable_rows(usable_rows(rows, output_dir, "perfusion"), output_dir, "tof")
    if not any(r.get("split") == "train" for r in usable):
        return write_data_verdict(
            out_meta, "skipped", "no `train` subject with a TOF-MRA completed the TOF stage"
        )
    try:
        return write_tof_training_data(Path(out_meta).parent, output_dir, usable, registration)
    except SubjectError as exc:  # e.g. a reference without all five maps
        return write_data_verdict(out_meta, "skipped", f"pix2pix needs all five maps: {exc}")


def train_stage(
    model: str,
    meta,
    out_verdict,
    *,
    training=None,
    model_params=None,
    constants=None,
    seed: int = 0,
    threads=None,
    finetune: bool = False,
) -> dict:
    """Train ``model`` on the data beside ``meta`` (resuming from a checkpoint in its folder)
    and leave its verdict ``out_verdict``: ``ok`` (with ``maps``, those the model learned),
    ``skipped`` (the data say why it cannot be trained) or ``failed`` (the error; the
    traceback is in the log). Never raises for the model: the others and the study go on.
    ``finetune``: start from the shipped weights (:mod:`bolus.weights`, checksum checked)."""
    from bolus.io.errors import ModelSkipped
    from bolus.qc import COHORT, write_verdict

    _verbose()
    data = read_data_verdict(meta)
    if data["status"] != "ok":
        return write_verdict(out_verdict, COHORT, f"train_{model}", "skipped",
                             f"no training data: {data['reason']}")  # fmt: skip
    config = {
        "training": section("training", training),
        "model_params": {model: model_params or {}},
        "constants": section("constants", constants),
        "seed": int(seed),
    }
    try:
        from bolus.learn.train import train_model
        from bolus.weights import verified

        init = verified(model) if finetune else None
        model_file = train_model(model, Path(meta).parent, Path(out_verdict).parent, config,
                                 threads=threads, init=init)  # fmt: skip
    except ModelSkipped as exc:
        log.warning("%s skipped: %s", model, exc)
        return write_verdict(out_verdict, COHORT, f"train_{model}", "skipped", str(exc))
    except Exception as exc:  # noqa: BLE001 — one untrainable model must not cost the study
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
        return write_verdict(out_verdict, COHORT, f"train_{model}", "failed", reason)
    maps = trained_maps(model_file)
    from bolus.models import model_maps

    left = [m for m in model_maps(model) if m not in maps]
    note = f"reference maps lack {', '.join(left)}: not learned" if left else ""
    if finetune:
        note = "fine-tuned from the shipped weights" + (f"; {note}" if note else "")
    return write_verdict(out_verdict, COHORT, f"train_{model}", "ok", note, maps=maps)


def pretrained_stage(model: str, out_verdict, output_dir) -> dict:
    """The shipped weights as this study's model: checked against their checksum, copied
    to :func:`bolus.paths.model_file` (the study keeps the weights it used) and the verdict
    ``ok`` with their maps; ``skipped`` when ``model`` has no shipped weights."""
    import shutil

    from bolus.qc import COHORT, write_verdict
    from bolus.weights import shipped, verified

    _verbose()
    stage = f"train_{model}"
    manifest = shipped().get(model)
    if manifest is None:
        return write_verdict(out_verdict, COHORT, stage, "skipped",
                             f"no shipped weights for {model} (training.source: pretrained); "
                             "train it on the cohort with training.source: scratch")  # fmt: skip
    try:
        source = verified(model)
    except ValueError as exc:
        return write_verdict(out_verdict, COHORT, stage, "failed", str(exc))
    target = paths.model_file(output_dir, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    log.info("%s: the shipped weights %s (sha256 %s)", model, source, manifest["sha256"])
    return write_verdict(out_verdict, COHORT, stage, "ok", "shipped weights (pretrained)",
                         maps=list(manifest["maps"]))  # fmt: skip


def trained_maps(model_file) -> list[str]:
    """The maps a trained model predicts (those its training references held)."""
    import torch

    record = torch.load(model_file, map_location="cpu", weights_only=False)
    return list(record.get("maps", []))


def predict_stage(model: str, model_verdict, output_dir, subject: str, *, device="auto",
                  threads=None) -> list[Path]:  # fmt: skip
    """Predict one subject's maps with a trained model; a model that was not trained (its
    verdict) gives the subject no maps and says why (ModelSkipped)."""
    from bolus.io.errors import ModelSkipped
    from bolus.qc import read_verdict

    _verbose()
    for stale in paths.SubjectPaths(output_dir, subject).maps(model).values():
        stale.unlink(missing_ok=True)  # an earlier run's maps (other maps, or no model now)
    verdict = read_verdict(model_verdict)
    if verdict.get("status") != "ok":
        raise ModelSkipped(f"{model} was not trained: {verdict.get('reason', '')}")
    from bolus.learn.predict import predict_subject

    model_file = paths.model_file(output_dir, model)
    return predict_subject(model_file, output_dir, subject, device=device, threads=threads)
