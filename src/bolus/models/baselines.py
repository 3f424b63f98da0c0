"""Voxel-wise baselines of the literature's tables: an MLP (torch) on flattened curves.

The random forest baseline is scikit-learn's ``RandomForestRegressor`` on the same
features (:func:`voxel_features`); it has no ``nn.Module`` and is built in
:mod:`bolus.learn.specs`.
"""

from __future__ import annotations

import torch
from torch import nn


def voxel_features(curves: torch.Tensor, aif: torch.Tensor) -> torch.Tensor:
    """(batch, time) tissue curves and (batch, time) AIFs → (batch, 2·time) flat features."""
    return torch.cat([curves, aif], dim=-1)


class VoxelMLP(nn.Module):
    """Multilayer perceptron on a voxel's concentration curve and the subject's AIF.

    Input: ``curves`` (batch, time), ``aif`` (batch, time), normalised as in
    :func:`bolus.learn.datasets.model_inputs`. Output: (batch, n_outputs) normalised maps.
    """

    def __init__(self, n_timepoints: int, n_outputs: int, hidden=(128, 128), dropout: float = 0.0):
        super().__init__()
        layers, width = [], 2 * n_timepoints
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, curves: torch.Tensor, aif: torch.Tensor) -> torch.Tensor:
        return self.net(voxel_features(curves, aif))
