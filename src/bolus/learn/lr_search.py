"""Optional k-fold learning-rate search before a torch model's training (config
``training.lr_search``).

For every candidate learning rate, the ``train`` subjects are split into ``folds`` groups
of whole subjects (a subject's voxels or slices never sit on both sides, which would
leak); for each fold a fresh model (same seed for every candidate) is trained for
``epochs`` epochs on the other folds and scored by the spec's loss on the held-out fold.
The candidate with the lowest mean held-out loss wins; ``lr_search.tsv`` beside the model
holds every (lr, fold) score and the mean, and the real training then uses the winner.
The ``val`` subjects stay untouched: they still pick the epoch of the final model.

The search trains the spec's last phase only (the cohort phase: the transformer's
fine-tuning, from fresh weights, not its pre-training on simulated curves). With fewer
train subjects than folds, there are as many folds as subjects; with one train subject,
every ``folds``-th row is a fold instead. A finished ``lr_search.tsv`` (same candidates,
folds and epochs) is read back rather than searched again, so a resumed training does not
repeat it.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("bolus.learn")

LR_SEARCH_TSV = "lr_search.tsv"
COLUMNS = ("lr", "fold", "val_loss", "epochs", "seconds")


class FoldData:
    """A training layout seen through one fold: ``rows("train")`` are the training rows
    outside ``held``, ``rows("val")`` those inside (``held``: a boolean per training row)."""

    def __init__(self, data, held: np.ndarray):
        self.data = data
        self.times_s = data.times_s
        self.maps = data.maps
        train = data.rows("train")
        self._rows = {"train": train[~held], "val": train[held]}

    def __getitem__(self, name: str):
        return self.data[name]

    def rows(self, split: str) -> np.ndarray:
        return self._rows["val" if split == "val" else "train"]

    def batches(self, split: str, batch_size: int, rng: np.random.Generator | None):
        rows = self.rows(split)
        if rng is not None:
            rows = rng.permutation(rows)
        for at in range(0, rows.size, batch_size):
            yield np.sort(rows[at : at + batch_size])


def subject_folds(data, folds: int) -> list[np.ndarray]:
    """Boolean masks over ``data.rows("train")``, one per fold: whole subjects per fold
    (subjects in turn, so each fold gets every ``k``-th subject), or every ``k``-th row
    when there is one training subject."""
    subjects = np.asarray(data["subject"])[data.rows("train")]
    unique = np.unique(subjects)
    if unique.size >= 2:
        k = min(int(folds), unique.size)
        fold_of = {s: i % k for i, s in enumerate(unique)}
        assignment = np.vectorize(fold_of.__getitem__, otypes=[np.int64])(subjects)
    else:
        k = int(folds)
        assignment = np.arange(subjects.size) % k
    return [assignment == i for i in range(k)]


def _fold_loss(spec, data, held, ctx, params, lr, epochs, seed) -> float:
    """Held-out loss after ``epochs`` epochs of the last phase on one fold's training rows."""
    import torch

    from bolus.learn.epoch import train_epoch, validate

    phase = spec.phases(params)[-1][0]
    source = FoldData(data, held)
    torch.manual_seed(seed)
    model = spec.build(ctx.times_s.size, params).to(ctx.device)
    spec.prepare(model, source, ctx)
    optimisers = spec.optimisers(model, {**params, "lr": lr})
    per_batch = spec.batch_size(params)
    max_batches = params.get("max_batches_per_epoch")
    best = math.inf
    for epoch in range(epochs):
        train_epoch(
            spec, model, optimisers, source, ctx, phase, per_batch, max_batches, seed, epoch
        )
        val = validate(spec, model, source, ctx, phase, per_batch, seed)
        if math.isfinite(val):
            best = min(best, val)
    return best


def search_learning_rate(name, spec, data, ctx, params, model_dir) -> float:
    """The candidate of ``params["lr_search"]`` with the lowest mean held-out loss over the
    folds (ties: the first listed); writes ``model_dir/lr_search.tsv``."""
    from bolus.config import schema_defaults

    # model_params.<model>.lr_search replaces the whole block: fill what it leaves out
    settings = schema_defaults()["training"]["lr_search"] | dict(params["lr_search"])
    candidates = [float(c) for c in settings["candidates"]]
    epochs = int(settings["epochs"])
    seed = int(params["seed"])
    folds = subject_folds(data, int(settings["folds"]))
    path = Path(model_dir) / LR_SEARCH_TSV
    table = _finished(path, candidates, len(folds), epochs)
    if table is None:
        rows = []
        for lr in candidates:
            for i, held in enumerate(folds):
                started = time.perf_counter()
                loss = _fold_loss(spec, data, held, ctx, params, lr, epochs, seed)
                rows.append((lr, str(i + 1), loss, epochs, time.perf_counter() - started))
                log.info("%s lr search: lr %.3g fold %d/%d: val %.4g", name, lr, i + 1,
                         len(folds), loss)  # fmt: skip
        table = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
        means = table.groupby("lr", sort=False)["val_loss"].mean()
        summary = pd.DataFrame(
            {"lr": means.index, "fold": "mean", "val_loss": means.to_numpy(), "epochs": epochs,
             "seconds": table.groupby("lr", sort=False)["seconds"].sum().to_numpy()}
        )  # fmt: skip
        table = pd.concat([table, summary], ignore_index=True)
        from bolus.io.atomic import write_table

        write_table(path, table, float_format="%.6g")
    means = table[table["fold"].astype(str) == "mean"].set_index("lr")["val_loss"]
    finite = means[np.isfinite(means.to_numpy(np.float64))]
    if finite.empty:
        raise RuntimeError(f"{name}: learning-rate search gave no finite validation loss")
    chosen = float(finite.idxmin())
    log.info("%s lr search: chose lr %.3g (mean held-out loss %.4g)", name, chosen, finite.min())
    return chosen


def _finished(path: Path, candidates, n_folds: int, epochs: int) -> pd.DataFrame | None:
    """A complete earlier search with the same settings, else None."""
    if not path.exists():
        return None
    table = pd.read_csv(path, sep="\t", dtype={"fold": str})
    if not set(COLUMNS) <= set(table.columns):
        return None
    done = table[table["fold"] != "mean"]
    same = (
        sorted(set(table["lr"].round(12))) == sorted({round(c, 12) for c in candidates})
        and len(done) == len(candidates) * n_folds
        and (table["epochs"] == epochs).all()
    )
    return table if same else None
