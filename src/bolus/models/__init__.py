"""Learned perfusion models: the networks (``nn.Module``) of the literature this project follows.

This package's ``__init__`` imports nothing heavy: :data:`MODELS` says, for every model name
of the config schema, which maps it predicts and which training layout it reads, so the
workflow can name its outputs without importing torch. The networks live in
``talebi.py``, ``stnet.py``, ``transformer.py`` and ``baselines.py``; training and prediction
(losses, data, checkpoints) in :mod:`bolus.learn`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What the workflow needs to know about a model before it exists.

    ``maps``: the maps it predicts (a subset of :data:`bolus.paths.MAPS`), in that order;
    ``layout``: the training data it reads (``voxels``: one concentration curve per row;
    ``slices``: whole axial slices of the series; ``tof``: whole coregistered TOF-MRA volumes,
    :mod:`bolus.learn.tof`).
    """

    name: str
    maps: tuple[str, ...]
    layout: str
    paper: str


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo("rf", ("cbf", "cbv", "mtt", "tmax", "ttp"), "voxels", "random forest baseline"),
        ModelInfo("mlp", ("cbf", "cbv", "mtt", "tmax", "ttp"), "voxels", "MLP baseline"),
        ModelInfo("talebi", ("cbf", "cbv"), "slices", "Talebi et al. 2024"),
        ModelInfo("talebi_truncated", ("cbf", "cbv"), "slices", "Talebi et al. 2024, 40 frames"),
        ModelInfo("stnet", ("cbf", "cbv", "tmax"), "slices", "Cao et al., ST-Net"),
        ModelInfo("transformer", ("cbf", "cbv", "mtt", "tmax"), "voxels", "Zeng et al. 2025"),
        ModelInfo(
            "pix2pix", ("cbf", "cbv", "mtt", "tmax", "ttp"), "tof", "Kossen et al., 3D pix2pix"
        ),
    )
}


def model_maps(name: str) -> tuple[str, ...]:
    """The maps model ``name`` predicts; ValueError for a model that is not implemented."""
    try:
        return MODELS[name].maps
    except KeyError:
        raise ValueError(
            f"model {name!r} is not implemented (available: {', '.join(MODELS)})"
        ) from None
