"""Tracer kinetics of the simulator: arterial input, residue functions, convolution.

Conventions (the pipeline's deconvolution uses the same ones, so truth and estimate
are comparable):

* concentrations are in mM; time in s;
* tissue concentration  C_t(t) = (ρ / k_H) · F · (C_a,local ⊗ R)(t),  F = CBF / 6000 in ml/g/s,
  with ρ the tissue density (g/ml) and k_H = (1 − Hct_large)/(1 − Hct_small);
* so the area ratio gives CBV:  (k_H/ρ) · ∫C_t / ∫C_a = F · MTT  (×100 → ml/100 g);
* the local AIF is the global one delayed by δ and dispersed by an exponential vascular
  transport function h(t) = exp(−t/β)/β (Calamante 2000).

Every function is vectorised over voxels: parameters broadcast over a leading batch axis,
time is the last axis.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaincc


def gamma_variate(t_s, t0_s: float, alpha: float, beta_s: float, peak: float):
    """Gamma-variate bolus  A·(t−t0)^α·exp(−(t−t0)/β)  scaled so its maximum is ``peak``.

    The maximum of the unscaled curve lies at t0 + α·β.
    """
    tau = np.clip(np.asarray(t_s, dtype=float) - t0_s, 0, None)
    return peak * (tau / (alpha * beta_s)) ** alpha * np.exp(alpha - tau / beta_s)


def exponential_kernel(t_s, beta_s):
    """Vascular transport function exp(−t/β)/β sampled on the uniform grid ``t_s`` from 0,
    normalised to unit area on that grid (so it conserves tracer); β broadcasts over voxels,
    β = 0 gives the identity (a unit impulse)."""
    t = np.asarray(t_s, dtype=float)
    dt = t[1] - t[0]
    beta = np.asarray(beta_s, dtype=float)[..., None]
    safe = np.where(beta > 0, beta, 1.0)
    kernel = np.where(beta > 0, np.exp(-t / safe), (t == 0).astype(float))
    return kernel / (kernel.sum(axis=-1, keepdims=True) * dt)


def arterial_input(
    t_s,
    *,
    arrival_s: float = 12.0,
    alpha: float = 3.0,
    beta_s: float = 1.5,
    peak_mM: float = 8.0,
    recirculation_fraction: float = 0.12,
    recirculation_delay_s: float = 8.0,
    recirculation_dispersion_s: float = 3.0,
    leakage_fraction: float = 0.02,
):
    """Gamma-variate first pass + dispersed, delayed recirculation + a small steady tail (mM).

    ``t_s`` is a uniform grid from 0. The recirculation is the first pass delayed by
    ``recirculation_delay_s``, dispersed by an exponential kernel and scaled to
    ``recirculation_fraction`` of the peak; the tail (``leakage_fraction`` of the peak) is
    reached smoothly after the first pass, as tracer mixes into the blood pool.
    """
    t = np.asarray(t_s, dtype=float)
    first = gamma_variate(t, arrival_s, alpha, beta_s, peak_mM)
    second = _fft_convolve(
        gamma_variate(t, arrival_s + recirculation_delay_s, alpha, beta_s, 1.0),
        exponential_kernel(t, recirculation_dispersion_s),
        t[1] - t[0],
    )
    second *= recirculation_fraction * peak_mM / max(second.max(), 1e-12)
    end_of_first_pass = arrival_s + alpha * beta_s + 6.0
    tail = leakage_fraction * peak_mM / (1.0 + np.exp(-(t - end_of_first_pass) / 2.0))
    return first + second + tail


def residue_function(t_s, mtt_s, shape):
    """Residue functions of the gamma family: R(t) = P(transit time > t).

    Transit times ~ Gamma(k = ``shape``, mean = ``mtt_s``): k = 1 is the exponential
    residue (well-mixed compartment), k → ∞ the box-car (plug flow). ∫R dt = MTT for any k.
    ``mtt_s`` and ``shape`` broadcast over voxels; returns (..., time).
    """
    t = np.asarray(t_s, dtype=float)
    mtt = np.asarray(mtt_s, dtype=float)[..., None]
    k = np.asarray(shape, dtype=float)[..., None]
    return gammaincc(k, k * np.clip(t, 0, None) / mtt)


def _fft_convolve(a, b, dt):
    """Linear (not circular) convolution along the last axis, times dt, same length as a."""
    n = a.shape[-1]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    out = np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[..., :n]
    return out * dt


def local_aif(t_s, aif_mM, delay_s, dispersion_s):
    """The AIF delayed by δ (s) and dispersed by exp(−t/β)/β, per voxel: (..., time).

    ``t_s`` is a uniform grid from 0; δ and β broadcast over voxels (β = 0: no dispersion).
    """
    t = np.asarray(t_s, dtype=float)
    delay, beta = np.broadcast_arrays(np.asarray(delay_s, float), np.asarray(dispersion_s, float))
    delays, index = np.unique(delay, return_inverse=True)
    shifted = np.stack([np.interp(t - d, t, aif_mM, left=0.0) for d in delays])[index]
    out = _fft_convolve(
        shifted.reshape(-1, t.size), exponential_kernel(t, beta.ravel()), t[1] - t[0]
    )
    return out.reshape(delay.shape + (t.size,))


def tissue_concentration(t_s, aif_local_mM, cbf_ml_100g_min, mtt_s, shape, constants):
    """C_t = (ρ/k_H)·F·(C_a,local ⊗ R) on a uniform grid ``t_s`` starting at 0, in mM.

    ``aif_local_mM`` is (..., time) (see :func:`local_aif`); the rest broadcast over voxels.
    ``constants`` is a :class:`bolus.config.PerfusionConstants`.
    """
    t = np.asarray(t_s, dtype=float)
    dt = t[1] - t[0]
    flow = np.asarray(cbf_ml_100g_min, dtype=float)[..., None] / 6000.0
    residue = residue_function(t + dt / 2, mtt_s, shape)  # midpoint rule: sum(R)·dt = MTT
    return (constants.density_g_ml / constants.kh) * flow * _fft_convolve(aif_local_mM, residue, dt)


def effective_residue_peak_time(t_s, mtt_s, shape, delay_s, dispersion_s):
    """True Tmax (s): δ + argmax over t of (h_β ⊗ R)(t), the residue function seen through
    the global AIF, which is what deconvolution with the global AIF estimates (Calamante 2000).
    """
    t = np.asarray(t_s, dtype=float)
    through = _fft_convolve(
        residue_function(t, mtt_s, shape), exponential_kernel(t, dispersion_s), t[1] - t[0]
    )
    return np.asarray(delay_s, dtype=float) + t[np.argmax(through, axis=-1)]


# Parker et al. 2006 population AIF (MRM 56:993), whole blood, mM, t in minutes
_PARKER = {"a1": 0.809, "a2": 0.330, "t1": 0.17046, "t2": 0.365, "sigma1": 0.0563,
           "sigma2": 0.132, "alpha": 1.050, "beta": 0.1685, "s": 38.078, "tau": 0.483}  # fmt: skip


def _parker_minutes(t_min):
    p = _PARKER
    g1 = np.exp(-((t_min - p["t1"]) ** 2) / (2 * p["sigma1"] ** 2))
    g2 = np.exp(-((t_min - p["t2"]) ** 2) / (2 * p["sigma2"] ** 2))
    return (
        p["a1"] / (p["sigma1"] * np.sqrt(2 * np.pi)) * g1
        + p["a2"] / (p["sigma2"] * np.sqrt(2 * np.pi)) * g2
        + p["alpha"] * np.exp(-p["beta"] * t_min) / (1 + np.exp(-p["s"] * (t_min - p["tau"])))
    )


def parker_aif(t_s, arrival_s=0.0, time_scale=1.0, peak_mM=None):
    """Parker 2006 population AIF: two Gaussians (first pass, recirculation) plus an
    exponential washout under a sigmoid, in mM, at times ``t_s`` (s).

    ``arrival_s`` shifts the curve; ``time_scale`` stretches it (> 1: slower bolus);
    ``peak_mM`` rescales it to that maximum. The published curve is already 1 % of its peak
    at its t = 0; that offset is removed so the curve rises from 0 at ``arrival_s``.
    The parameters broadcast over a leading batch axis (shape (n, 1) for n curves).
    """
    t = np.asarray(t_s, dtype=float)
    t_min = np.clip(t - arrival_s, 0, None) / 60.0 / np.asarray(time_scale, dtype=float)
    out = np.clip(_parker_minutes(t_min) - _parker_minutes(0.0), 0, None)
    out = np.where(t >= arrival_s, out, 0.0)
    if peak_mM is not None:
        out = out * (np.asarray(peak_mM, dtype=float) / np.max(out, axis=-1, keepdims=True))
    return out
