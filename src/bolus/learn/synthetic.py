"""Simulated voxel curves for pre-training the voxel-wise Transformer (Zeng et al. 2025).

Built on the cohort simulator's tracer kinetics (:mod:`bolus.simulate.kinetics`), with a
wider range than the phantom draws from:

* AIF: the simulator's gamma-variate bolus with recirculation, or the Parker et al. 2006
  population AIF (two Gaussians and a sigmoid-modulated exponential), arrival 3–15 s;
* residue: gamma family (shape 1 = exponential … 12 ≈ box-car), MTT 1.5–16 s,
  CBF 5–90 ml/100 g/min;
* bolus arrival delay 0–``max_delay_s`` and exponential dispersion 0–3 s of the local AIF;
* acquisition: frame interval ``dt`` 0.8–2× the model's, length 70–100 % of its window,
  Gaussian noise at a peak SNR of 5–100, then interpolated onto the model's grid.

Targets: the local AIF, the curve itself (for the reconstruction loss) and the true Tmax
as deconvolution with the global AIF sees it (delay + argmax of the dispersed residue,
:func:`bolus.simulate.kinetics.effective_residue_peak_time`), which is what the cohort's
reference Tmax means. Everything is normalised as in :func:`bolus.learn.datasets.model_inputs`.
"""

from __future__ import annotations

import numpy as np

from bolus.learn.datasets import AIF_SCALE, CURVE_SCALE, resample_time
from bolus.simulate.kinetics import (
    arterial_input,
    effective_residue_peak_time,
    local_aif,
    parker_aif,
    tissue_concentration,
)

FINE_DT_S = 0.1


def simulate_curves(
    n: int, grid_s, constants, rng: np.random.Generator, *, max_delay_s: float = 25.0, group=256
) -> dict[str, np.ndarray]:
    """``n`` simulated voxels on the model grid ``grid_s`` (s from 0): arrays ``curves``,
    ``aif``, ``local_aif`` (n, T) float32 and ``bad`` (n,) float32 (s)."""
    grid = np.asarray(grid_s, float)
    window = grid[-1] + (grid[1] - grid[0])
    t = np.arange(0.0, window + 2 * max_delay_s, FINE_DT_S)
    out = {k: np.zeros((n, grid.size), np.float32) for k in ("curves", "aif", "local_aif")}
    out["bad"] = np.zeros(n, np.float32)
    for at in range(0, n, group):
        m = min(group, n - at)
        arrival = rng.uniform(3.0, 15.0)
        if rng.random() < 0.5:
            aif = arterial_input(
                t,
                arrival_s=arrival,
                alpha=rng.uniform(2.0, 4.0),
                beta_s=rng.uniform(1.0, 2.0),
                recirculation_fraction=rng.uniform(0.05, 0.2),
                recirculation_delay_s=rng.uniform(6.0, 12.0),
            )
        else:
            aif = parker_aif(t, arrival_s=arrival)
        delay = rng.uniform(0.0, max_delay_s, m)
        dispersion = rng.uniform(0.0, 3.0, m) * (rng.random(m) < 0.7)
        cbf = rng.uniform(5.0, 90.0, m)
        mtt = rng.uniform(1.5, 16.0, m)
        shape = rng.uniform(1.0, 12.0, m)
        local = local_aif(t, aif, delay, dispersion)
        tissue = tissue_concentration(t, local, cbf, mtt, shape, constants)
        tmax = effective_residue_peak_time(t, mtt, shape, delay, dispersion)
        # acquisition: frame interval and length of its own, noise, then the model's grid
        dt_acq = (grid[1] - grid[0]) * rng.uniform(0.8, 2.0)
        acq = np.arange(0.0, window * rng.uniform(0.7, 1.0), dt_acq)
        fine_idx = np.clip(np.round(acq / FINE_DT_S).astype(int), 0, t.size - 1)
        area = float(np.trapezoid(aif[fine_idx], acq))  # as model_inputs: acquired window
        sampled = tissue[:, fine_idx]
        sigma = sampled.max(axis=1, keepdims=True) / rng.uniform(5.0, 100.0, (m, 1))
        sampled = sampled + sigma * rng.standard_normal(sampled.shape)
        out["curves"][at : at + m] = resample_time(sampled, acq, grid) * CURVE_SCALE / area
        out["aif"][at : at + m] = resample_time(aif[fine_idx], acq, grid) * AIF_SCALE / area
        out["local_aif"][at : at + m] = (
            resample_time(local[:, fine_idx], acq, grid) * AIF_SCALE / area
        )
        out["bad"][at : at + m] = tmax
    return out
