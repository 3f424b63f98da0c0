"""Contrast-leakage correction of DSC concentration curves (Boxerman–Weisskoff).

Where the blood–brain barrier is broken (enhancing tumours), gadolinium leaks out of the
vessels during the acquisition. Its T1 shortening raises the signal, so the measured ΔR2*
falls below the intravascular one and CBV is underestimated; with a T2*-dominated leak it is
overestimated. Boxerman, Schmainda and Weisskoff (AJNR 2006;27:859) model a voxel's measured
curve as a scaled copy of the mean curve of non-enhancing brain, minus a term proportional
to its running integral (the extravasated tracer, no backflux within the acquisition):

    ΔR2*(t) ≈ K1 · ΔR2*_ref(t) − K2 · ∫₀ᵗ ΔR2*_ref(τ) dτ

K1 and K2 are fitted per voxel by linear least squares; the corrected curve is

    ΔR2*_corr(t) = ΔR2*(t) + K2 · ∫₀ᵗ ΔR2*_ref(τ) dτ

K2 (1/s) > 0: T1-dominated leakage (CBV underestimated before correction); K2 < 0:
T2*-dominated. The design matrix is the same for every voxel, so one pseudo-inverse fits all
voxels at once (one matrix product, no loop over voxels).

Reference curve (:func:`nonenhancing_reference`): the mean curve of brain voxels whose first
pass is clearly visible (peak ≥ 5 × baseline noise), whose area is that of tissue (between
0.2 and 3 × the median area: not CSF or noise, not a large vessel), and whose post-bolus tail
returns to the level typical of the brain: the mean of the last quarter of the frames (after
the mean curve's peak), relative to the voxel's peak, within 3 robust standard deviations
(1.4826 × MAD) of the median of those voxels (leaky voxels fall below it, T1, or stay above
it, T2*), and whose first moment of the first pass is within 3 robust SDs of the median
(delayed, dispersed ischaemic tissue would broaden the reference). A single noisy tail says
little, so the model is then fitted against the mean of these voxels, and those whose K2
differs from the median K2 by more than 3 of their own standard errors are dropped too.

Arrays: time is the last axis, ``(..., T)``; ``times_s`` (T,) the acquisition times in s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bolus.preprocess.bolus_arrival import baseline_frames

# reference voxels: minimum contrast-to-noise of the first pass; area range relative to the
# median; tail window (last fraction of the frames); tail outlier cut in robust SDs
MIN_CNR = 5.0
AREA_RANGE = (0.2, 3.0)
TAIL_FRACTION = 0.25
TAIL_CUT_SD = 3.0
MIN_REFERENCE_VOXELS = 10


@dataclass(frozen=True)
class LeakageResult:
    """corrected: (..., T) corrected concentration (input dtype; unchanged outside the mask);
    k1 (dimensionless) and k2 (1/s): spatial maps, 0 outside the mask; reference_curve (T,);
    reference_mask: bool, spatial shape, the non-enhancing voxels averaged into it."""

    corrected: np.ndarray
    k1: np.ndarray
    k2: np.ndarray
    reference_curve: np.ndarray
    reference_mask: np.ndarray


def cumulative_integral(curves, times_s) -> np.ndarray:
    """∫₀ᵗ c dτ at every frame by the trapezoid rule on the real acquisition times (..., T)."""
    curves = np.asarray(curves, dtype=float)
    steps = 0.5 * (curves[..., 1:] + curves[..., :-1]) * np.diff(np.asarray(times_s, float))
    return np.concatenate([np.zeros(curves.shape[:-1] + (1,)), np.cumsum(steps, axis=-1)], -1)


def _area(curves, times) -> np.ndarray:
    return cumulative_integral(curves, times)[..., -1]


def _fit(curves, reference, times):
    """Least-squares K1, K2 and the standard error of K2 of every curve (n, T) against the
    reference (T,), on the frames from the reference's first baseline frame on; also the
    reference's running integral (T,). One pseudo-inverse for all curves."""
    integral = cumulative_integral(reference, times)
    first = baseline_frames(reference, times).start
    design = np.stack([reference[first:], -integral[first:]], axis=1)  # (T', 2)
    k1, k2 = np.linalg.pinv(design) @ curves[:, first:].T  # (n,), (n,)
    residual = curves[:, first:] - (design @ np.stack([k1, k2])).T
    sigma = np.sqrt((residual**2).sum(axis=1) / max(design.shape[0] - 2, 1))
    se_k2 = sigma * np.sqrt(np.linalg.inv(design.T @ design)[1, 1])
    return k1, k2, se_k2, integral


def nonenhancing_reference(conc, times_s, mask) -> tuple[np.ndarray, np.ndarray]:
    """(reference curve (T,), bool mask of the voxels averaged): the mean ΔR2* of
    non-enhancing brain (module docstring). Raises ValueError when fewer than
    :data:`MIN_REFERENCE_VOXELS` voxels qualify."""
    conc = np.asarray(conc)
    times = np.asarray(times_s, dtype=float)
    n_frames = conc.shape[-1]
    if times.shape != (n_frames,):
        raise ValueError(f"times_s has shape {times.shape}, the data has {n_frames} frames")
    inside = np.asarray(mask).astype(bool)
    if inside.shape != conc.shape[:-1]:
        raise ValueError(f"mask has shape {inside.shape}, the data's is {conc.shape[:-1]}")
    index = np.flatnonzero(inside.reshape(-1))
    curves = np.nan_to_num(conc.reshape(-1, n_frames)[index].astype(float))
    baseline = baseline_frames(curves.mean(axis=0), times)
    curves -= curves[:, baseline].mean(axis=1, keepdims=True)
    noise = curves[:, baseline].std(axis=1, ddof=1)
    peak = curves.max(axis=1)
    area = _area(curves, times)
    mean_peak = int(np.argmax(curves.mean(axis=0)))
    tail_start = max(mean_peak + 1, int(round((1.0 - TAIL_FRACTION) * n_frames)))
    tail_start = min(tail_start, n_frames - 1)
    positive = (peak >= MIN_CNR * noise) & (area > 0)
    if positive.sum() < MIN_REFERENCE_VOXELS:
        raise ValueError("too few brain voxels with a visible first pass for a leakage reference")
    median_area = np.median(area[positive])
    tissue = (
        positive & (area >= AREA_RANGE[0] * median_area) & (area <= AREA_RANGE[1] * median_area)
    )
    tail = curves[:, tail_start:].mean(axis=1) / np.where(peak > 0, peak, 1.0)
    centre = np.median(tail[tissue])
    spread = 1.4826 * np.median(np.abs(tail[tissue] - centre))
    keep = tissue & (np.abs(tail - centre) <= TAIL_CUT_SD * max(spread, 1e-12))
    # normal timing: the first moment of the first pass (to the mean curve's tail) typical of
    # the brain, so delayed, dispersed tissue (ischaemia) does not broaden the reference
    first_pass = np.clip(curves[:, :tail_start], 0.0, None)
    moment = (first_pass @ times[:tail_start]) / np.maximum(first_pass.sum(axis=1), 1e-12)
    m_centre = np.median(moment[keep])
    m_spread = 1.4826 * np.median(np.abs(moment[keep] - m_centre))
    keep &= np.abs(moment - m_centre) <= TAIL_CUT_SD * max(m_spread, 1e-12)
    if keep.sum() < MIN_REFERENCE_VOXELS:
        raise ValueError("too few non-enhancing brain voxels for a leakage reference")
    # the tail of one noisy curve says little; the whole curve says more: fit the model
    # against this provisional reference and drop the curves whose K2 stands out from the
    # reference voxels' median by more than TAIL_CUT_SD of its own standard errors
    _, k2, se_k2, _ = _fit(curves[keep], curves[keep].mean(axis=0), times)
    centre_k2 = np.median(k2)
    kept = np.flatnonzero(keep)
    keep[kept[np.abs(k2 - centre_k2) > TAIL_CUT_SD * se_k2]] = False
    if keep.sum() < MIN_REFERENCE_VOXELS:
        raise ValueError("too few non-enhancing brain voxels for a leakage reference")
    reference = curves[keep].mean(axis=0)
    reference_mask = np.zeros(inside.size, dtype=bool)
    reference_mask[index[keep]] = True
    return reference, reference_mask.reshape(inside.shape)


def boxerman_weisskoff(conc, times_s, mask, reference=None, *, min_t: float = 0.0) -> LeakageResult:
    """Fit K1, K2 in every mask voxel and return the leakage-corrected concentration.

    ``reference``: the (T,) reference curve, or None for :func:`nonenhancing_reference`.
    The fit uses the frames from the first baseline frame on (steady-state frames before it
    are left out); the correction is applied to every frame. ``min_t`` > 0 applies only the
    K2 that differ from 0 by more than ``min_t`` standard errors (from the voxel's fit
    residuals), leaving noise-level K2 uncorrected; 0 (default) is the published method: on
    simulated subjects it gave the lowest CBV errors, with and without leakage.
    """
    conc = np.asarray(conc)
    times = np.asarray(times_s, dtype=float)
    n_frames = conc.shape[-1]
    inside = np.asarray(mask).astype(bool)
    if reference is None:
        reference, reference_mask = nonenhancing_reference(conc, times, inside)
    else:
        reference = np.asarray(reference, dtype=float)
        reference_mask = np.zeros(inside.shape, dtype=bool)
        if reference.shape != (n_frames,):
            raise ValueError(f"reference has shape {reference.shape}, expected ({n_frames},)")
    index = np.flatnonzero(inside.reshape(-1))
    flat = conc.reshape(-1, n_frames)
    curves = np.nan_to_num(flat[index].astype(float))
    k1, k2, se_k2, integral = _fit(curves, reference, times)
    # with min_t > 0 only a K2 more than min_t standard errors from 0 is applied
    applied = np.where(np.abs(k2) > min_t * se_k2, k2, 0.0)

    corrected = flat.copy()
    corrected[index] = (curves + applied[:, None] * integral[None, :]).astype(
        flat.dtype, copy=False
    )
    spatial = inside.shape

    def as_map(values):
        out = np.zeros(inside.size, dtype=np.float32)
        out[index] = values
        return out.reshape(spatial)

    return LeakageResult(
        corrected=corrected.reshape(conc.shape),
        k1=as_map(k1),
        k2=as_map(k2),
        reference_curve=reference,
        reference_mask=reference_mask,
    )
