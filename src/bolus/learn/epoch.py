"""One epoch of the training engine and its validation, for every model
(:func:`bolus.learn.train.train_model`) and the learning-rate search
(:mod:`bolus.learn.lr_search`) alike."""

from __future__ import annotations

import numpy as np


def train_epoch(
    spec, model, optimisers, source, ctx, phase, per_batch, max_batches, seed, epoch
) -> list[dict[str, float]]:
    """One epoch over the ``train`` rows (seeded by ``seed`` and ``epoch``, at most
    ``max_batches`` batches), one :meth:`~bolus.learn.specs.ModelSpec.step` per batch; the
    batches' losses."""
    import torch

    torch.manual_seed(seed * 1000 + epoch)
    ctx.extra["rng"] = np.random.default_rng([seed, epoch, 1])
    model.train()
    losses = []
    for k, rows in enumerate(
        source.batches("train", per_batch, np.random.default_rng([seed, epoch]))
    ):
        if max_batches and k >= int(max_batches):
            break
        losses.append(
            spec.step(model, optimisers, spec.batch(source, rows, ctx, phase), ctx, phase)
        )
    return losses


def epoch_means(losses: list[dict[str, float]]) -> dict[str, float]:
    """The epoch's mean of every loss the steps returned (``loss``: the training curve)."""
    if not losses:
        return {"loss": float("nan")}
    return {k: float(np.mean([step[k] for step in losses])) for k in losses[0]}


def validate(spec, model, source, ctx, phase, per_batch, seed) -> float:
    """The mean of the spec's loss over the ``val`` batches (in order, a fixed seed)."""
    import torch

    model.eval()
    ctx.extra["rng"] = np.random.default_rng([seed, 999])
    total, n = 0.0, 0
    with torch.no_grad():
        for rows in source.batches("val", per_batch, None):
            total += float(spec.loss(model, spec.batch(source, rows, ctx, phase), ctx, phase))
            n += 1
    return total / n if n else float("nan")
