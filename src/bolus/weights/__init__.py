"""Pretrained weights shipped with bolus, and which source each model's weights come from.

Every shipped model is two files here: ``<model>.pt`` (the ``model.pt`` record that
:func:`bolus.learn.predict.load_trained` reads: weights, time grid, target scales, sizes)
and ``<model>.json``, its manifest: the file's SHA-256 and size, the maps it predicts, the
recipe and seed that made it (``bolus pretrain``, :mod:`bolus.learn.pretrain`) and its
training curve's last figures. This module reads only JSON: the workflow imports it when
it plans, and torch stays out of that.

``training.source`` (config schema) picks, for each model, where its weights come from
(:func:`model_source`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
SOURCES = ("auto", "pretrained", "finetune", "scratch")


def manifest_file(model: str, folder=WEIGHTS_DIR) -> Path:
    return Path(folder) / f"{model}.json"


def weights_file(model: str, folder=WEIGHTS_DIR) -> Path:
    return Path(folder) / f"{model}.pt"


def shipped(folder=WEIGHTS_DIR) -> dict[str, dict]:
    """{model: manifest} of every model with weights in ``folder`` (the package's)."""
    found = {}
    for path in sorted(Path(folder).glob("*.json")):
        if weights_file(path.stem, folder).exists():
            found[path.stem] = json.loads(path.read_text())
    return found


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(model: str, folder=WEIGHTS_DIR) -> Path:
    """The shipped weights of ``model`` after checking their SHA-256 against the manifest
    (ValueError naming the file when they differ, FileNotFoundError when not shipped)."""
    path, manifest = weights_file(model, folder), manifest_file(model, folder)
    if not (path.exists() and manifest.exists()):
        raise FileNotFoundError(f"no shipped weights for {model!r} in {folder}")
    expected = json.loads(manifest.read_text())["sha256"]
    found = sha256(path)
    if found != expected:
        raise ValueError(f"{path}: SHA-256 {found} differs from its manifest's {expected}")
    return path


def shipped_grid(model: str, folder=WEIGHTS_DIR) -> list[float]:
    """The time grid (s from the first frame) of ``model``'s shipped weights: the grid the
    cohort's training data are written on when it is fine-tuned."""
    grid = json.loads(manifest_file(model, folder).read_text())["grid_s"]
    return [grid["start"] + k * grid["step"] for k in range(int(grid["frames"]))]


def model_source(model: str, source: str, has_training_subjects: bool) -> str:
    """Where ``model``'s weights come from in this run: ``pretrained`` (the shipped weights,
    no training), ``finetune`` (the shipped weights trained further on the cohort's
    train/val subjects) or ``scratch`` (trained on the cohort from random weights).

    ``auto`` is ``finetune`` when the cohort has train subjects with reference maps and
    ``pretrained`` otherwise, for a model with shipped weights; ``scratch`` for one without
    (which is skipped when the cohort has no train subject). ``finetune`` of a model without
    shipped weights is ``scratch``; ``pretrained`` of one is kept (its job says it was
    skipped, and why)."""
    if source not in SOURCES:
        raise ValueError(f"training.source must be one of {', '.join(SOURCES)}, got {source!r}")
    available = model in shipped()
    if source == "auto":
        if not available:
            return "scratch"
        return "finetune" if has_training_subjects else "pretrained"
    if source == "finetune" and not available:
        return "scratch"
    return source
