"""Bolus arrival: which frames of a dynamic series come before the contrast arrives.

Used by motion correction (its reference is the mean of the pre-bolus volumes), by the
concentration (S0 / baseline HU) and by the AIF search. Frames and curves only; no I/O.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

# Steady-state frames skipped at the start of a dynamic series (T1 saturation of the first
# volumes makes them brighter), depending on how many frames the series has.
_STEADY_STATE_FRAMES = ((20, 2), (8, 1), (0, 0))

# Fraction of the bolus' peak deviation below which a frame still counts as baseline.
_ARRIVAL_FRACTION = 0.1
# ... and the noise multiple (robust σ of the frame-to-frame differences) it must exceed.
_ARRIVAL_NOISE_SIGMAS = 3.0
# Share of the rise above which pre-peak frames are left out of the first baseline fit.
_INITIAL_FIT_FRACTION = 0.25


def _steady_state_frames(n_frames: int) -> int:
    for minimum, skip in _STEADY_STATE_FRAMES:
        if n_frames >= minimum:
            return skip
    return 0


def baseline_frames(mean_signal_curve, times_s, *, skip_frames: int | None = None) -> slice:
    """Frames before the bolus arrives: ``slice(first, stop)`` into the time axis.

    ``mean_signal_curve`` is one curve (T,), typically the mean over the brain: DSC signal
    (the bolus is a dip) or CT HU / a concentration curve (the bolus is a peak); the
    direction is detected, not assumed.

    Method (robust to noise, no model fit):

    1. skip the first ``skip_frames`` frames (steady state; default 2 for ≥ 20 frames,
       1 for ≥ 8, else 0);
    2. on the curve smoothed by a 3-frame moving average, the bolus is the largest deviation
       from a robust (Theil–Sen) line through the curve (the bolus passage is a minority of
       frames, so the line follows the baseline level and any drift of it);
    3. the pre-peak baseline level is a robust (Theil–Sen) straight line through the frames
       before that extremum (first fit: only those before the curve passes a quarter of its
       rise, so that a slow rise is not taken for a drift) — a drift (head motion, scanner)
       is not mistaken for the bolus — refitted on the baseline found (up to 3 times), and
       the noise σ the robust (MAD)
       spread of their frame-to-frame differences / √2;
    4. walking back from the extremum, the bolus has arrived while the deviation exceeds
       max(10 % of the peak deviation, 3σ); the first frame that falls below is the last
       frame the bolus has not reached — it is left out as a one-frame safety margin.

    At least one frame is always returned. ``times_s`` is accepted for symmetry with the
    other functions and validated, but the detection works in frames.
    """
    curve = np.asarray(mean_signal_curve, dtype=float)
    if curve.ndim != 1:
        raise ValueError(f"baseline_frames needs one curve (T,), got shape {curve.shape}")
    n = curve.size
    if np.asarray(times_s).shape != (n,):
        raise ValueError(f"times_s has shape {np.shape(times_s)}, the curve has {n} frames")
    curve = np.nan_to_num(curve, nan=0.0, posinf=0.0, neginf=0.0)
    first = _steady_state_frames(n) if skip_frames is None else int(skip_frames)
    first = min(max(first, 0), max(n - 1, 0))
    if n - first < 4:
        return slice(first, first + 1)

    # a 3-frame moving average keeps single noisy frames from posing as the bolus; it widens
    # the rising edge by at most one frame, so the baseline can only get shorter
    curve = uniform_filter1d(curve, size=3, mode="nearest") if n >= 6 else curve
    tail = curve[first:]
    tail_slope, tail_intercept = _theil_sen(np.arange(first, n, dtype=float), tail)
    deviation = tail - (tail_intercept + tail_slope * np.arange(first, n))
    peak = first + int(np.argmax(np.abs(deviation)))
    direction = np.sign(deviation[peak - first]) or 1.0
    if peak - first < 2:
        return slice(first, first + 1)

    pre = curve[first:peak]
    differences = np.diff(pre)
    sigma = 1.4826 * np.median(np.abs(differences - np.median(differences))) / np.sqrt(2.0)
    frames = np.arange(n, dtype=float)
    # the baseline level may drift (head motion, scanner drift): a robust straight line
    # (Theil–Sen) through the pre-peak frames, refitted on the baseline it finds. A slow rise
    # (CT perfusion's mean curve, delayed tissue) can fill half the pre-peak frames, beyond
    # Theil–Sen's breakdown point (29 %): the first fit uses only the frames before the
    # curve, walking back from the peak, falls below a quarter of its rise
    low = np.percentile(direction * pre, 10.0)
    rise = direction * curve[peak] - low
    k = peak
    while k > first and direction * curve[k - 1] - low > _INITIAL_FIT_FRACTION * rise:
        k -= 1
    fit_stop = k if k - first >= 3 else peak
    slope, intercept = _theil_sen(frames[first:fit_stop], curve[first:fit_stop])
    stop = peak
    for _ in range(3):
        level = intercept + slope * frames
        height = direction * (curve[peak] - level[peak])
        threshold = max(_ARRIVAL_FRACTION * height, _ARRIVAL_NOISE_SIGMAS * sigma)
        k = peak
        while k > first and direction * (curve[k] - level[k]) > threshold:
            k -= 1
        # frame k is the last one below threshold; leave it out as a margin
        new_stop = max(k, first + 1)
        if new_stop == stop or new_stop - first < 3:
            stop = new_stop
            break
        stop = new_stop
        slope, intercept = _theil_sen(frames[first:stop], curve[first:stop])
    return slice(first, stop)


def _theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope (median of pairwise slopes) and intercept (median residual) of a robust line."""
    if x.size < 2:
        return 0.0, float(np.median(y)) if y.size else 0.0
    i, j = np.triu_indices(x.size, k=1)
    slope = float(np.median((y[j] - y[i]) / (x[j] - x[i])))
    return slope, float(np.median(y - slope * x))
