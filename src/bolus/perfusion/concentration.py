"""From measured signal to tracer concentration, per voxel.

DSC-MRI: the T2* signal drops while the bolus passes,
``S(t) = S0 · exp(−TE · ΔR2*(t))``, so ``ΔR2*(t) = −ln(S(t)/S0) / TE`` (1/s), with S0 the
mean signal over the pre-bolus (baseline) frames. ΔR2* is proportional to the tracer
concentration; the proportionality constant cancels in every relative map (and is the same in
tissue and AIF by assumption), so the pipeline calls ΔR2* "concentration".

CT perfusion: attenuation rises linearly with iodine, so the concentration is
``HU(t) − baseline HU``.

Arrays: time is the last axis, ``(..., T)``; ``times_s`` holds the acquisition time of every
frame in seconds. No file I/O here.
"""

from __future__ import annotations

import numpy as np

from bolus.preprocess.bolus_arrival import baseline_frames

__all__ = ["baseline_frames", "concentration_from_signal", "ct_concentration"]


def _as_baseline_slice(baseline, n_frames: int) -> slice:
    if isinstance(baseline, slice):
        return baseline
    if isinstance(baseline, int | np.integer):
        if not 1 <= baseline <= n_frames:
            raise ValueError(f"baseline={baseline} frames is outside 1..{n_frames}")
        return slice(0, int(baseline))
    raise TypeError(f"baseline must be a slice, an int (frame count) or None, not {baseline!r}")


def _spatial_mask(mask, spatial_shape) -> np.ndarray:
    if mask is None:
        return np.ones(spatial_shape, dtype=bool)
    mask = np.asarray(mask).astype(bool)
    if mask.shape != tuple(spatial_shape):
        raise ValueError(
            f"mask has shape {mask.shape}, the data's spatial shape is {spatial_shape}"
        )
    return mask


def _mean_curve(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    flat = data.reshape(-1, data.shape[-1])
    selected = flat[mask.reshape(-1)] if mask.any() else flat
    return np.nan_to_num(selected.astype(float)).mean(axis=0)


def concentration_from_signal(
    signal,
    te_s: float,
    times_s,
    mask=None,
    baseline=None,
    *,
    min_signal_ratio: float = 1e-3,
):
    """ΔR2*(t) = −ln(S(t)/S0) / TE in 1/s, and S0 (the mean baseline signal).

    Parameters
    ----------
    signal : (..., T) array — DSC magnitude signal.
    te_s : echo time in seconds.
    times_s : (T,) acquisition times in seconds.
    mask : optional boolean array of the spatial shape ``signal.shape[:-1]``; outside it the
        concentration is 0 (and the automatic baseline uses only its voxels).
    baseline : ``slice`` of baseline frames, an ``int`` n (frames ``0..n−1``), or None to
        detect it from the mean curve with :func:`baseline_frames`.
    min_signal_ratio : S/S0 is clipped to ``[min_signal_ratio, ∞)`` so that S ≤ 0 (noise,
        saturation) gives a large finite ΔR2* (at most ln(1/min_signal_ratio)/TE), never inf.

    Returns
    -------
    conc : (..., T) ΔR2* in 1/s, finite everywhere; 0 where S0 ≤ 0 or outside the mask.
        float32 for float32/int16 input, float64 otherwise.
    s0 : (...) the baseline signal.
    """
    signal = np.asarray(signal)
    if signal.ndim < 1:
        raise ValueError("signal needs a time axis")
    if te_s is None or not te_s > 0:
        raise ValueError(f"echo time must be positive (seconds), got {te_s!r}")
    values, inside, s0 = _baseline(signal, times_s, baseline, mask)
    valid = inside & (s0 > 0)
    safe_s0 = np.where(valid, s0, 1.0)
    ratio = np.clip(values / safe_s0[..., None], min_signal_ratio, None)
    conc = -np.log(ratio) / float(te_s)
    conc[~valid] = 0.0
    out_dtype = np.result_type(signal.dtype, np.float32)
    return conc.astype(out_dtype, copy=False), s0.astype(out_dtype, copy=False)


def _baseline(data: np.ndarray, times_s, baseline, mask):
    """(finite float values, spatial mask, mean over the baseline frames) of (..., T) data;
    the baseline frames are detected on the mean curve inside the mask when not given."""
    n_frames = data.shape[-1]
    if np.shape(times_s) != (n_frames,):
        raise ValueError(f"times_s has shape {np.shape(times_s)}, the data has {n_frames} frames")
    inside = _spatial_mask(mask, data.shape[:-1])
    if baseline is None:
        baseline = baseline_frames(_mean_curve(data, inside), times_s)
    frames = _as_baseline_slice(baseline, n_frames)
    values = np.nan_to_num(data.astype(float), nan=0.0, posinf=0.0, neginf=0.0)
    return values, inside, values[..., frames].mean(axis=-1)


def ct_concentration(hu, times_s, baseline=None, mask=None, *, return_baseline: bool = False):
    """CT perfusion: concentration = HU(t) − baseline HU (mean over the baseline frames).

    ``hu`` is (..., T); ``baseline`` as in :func:`concentration_from_signal` (None: detected
    on the mean curve over ``mask``). Returns the concentration in HU above baseline, 0
    outside the mask and finite everywhere; with ``return_baseline=True`` the tuple
    ``(conc, baseline_hu)``.
    """
    hu = np.asarray(hu)
    values, inside, hu0 = _baseline(hu, times_s, baseline, mask)
    conc = values - hu0[..., None]
    conc[~inside] = 0.0
    out_dtype = np.result_type(hu.dtype, np.float32)
    conc = conc.astype(out_dtype, copy=False)
    if return_baseline:
        return conc, hu0.astype(out_dtype, copy=False)
    return conc
