"""Automatic arterial input function (AIF) and venous output function (VOF) selection.

In the spirit of Mouridsen 2006 and Peruzzo 2011: an arterial curve is large, early and
narrow, and clean; a venous sinus is large too but later and broader. Steps, all
vectorised over the candidate voxels:

1. every curve in the mask is baseline-corrected (mean of the pre-bolus frames → 0, the
   frames found by :func:`bolus.perfusion.concentration.baseline_frames` on the mean curve);
2. candidates: curves with a positive peak and area whose area under the curve is in the
   top 10 % of the mask (Mouridsen: the AIF is among the largest curves), and at least
   ``5 · n_voxels`` of the largest;
3. noisy curves are dropped: peak below 5 × the baseline noise σ (contrast-to-noise < 5);
4. curves peaking after the median curve of the mask are dropped: an artery feeds the
   tissue and peaks before most of it, a vein drains it and peaks after (skipped if fewer
   than ``n_voxels`` would remain);
5. each candidate is scored

       score = peak / FWHM  ×  exp(−max(0, TTP − TTP_early) / 2 s)  ×  1 / (1 + 10 σ / peak)

   — high and narrow, penalised when it peaks later than the early arrivals (TTP_early: the
   5th percentile of the candidates' TTP; a vein peaks several seconds later and loses
   most of its score) and when it is rough;
6. the AIF is the mean of the ``n_voxels`` best-scoring curves, baseline-corrected again.

VOF: among the candidates not chosen for the AIF, those peaking at least one frame
interval after the AIF; the mean of the ``n_voxels`` with the largest area. It is reported
only if its area is at least half the AIF's (a sinus carries the whole bolus; smaller late
curves are tissue), else None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bolus.config import schema_defaults
from bolus.perfusion.concentration import baseline_frames

# Step 2: fraction of the mask's curves (by area) that may hold the AIF, and the minimum
# number of candidates as a multiple of n_voxels.
CANDIDATE_AREA_FRACTION = 0.10
CANDIDATE_MULTIPLE = 5
# Step 3: minimum contrast-to-noise (peak / baseline σ).
MIN_CNR = 5.0
# Step 4: time constant (s) of the late-peak penalty; weight of the roughness penalty.
LATE_PENALTY_S = 2.0
ROUGHNESS_WEIGHT = 10.0
EARLY_PERCENTILE = 5.0


@dataclass(frozen=True)
class AIFResult:
    """The AIF and where it came from.

    times_s: (T,) acquisition times; curve: (T,) baseline-corrected AIF (same units as the
    input concentration); voxel_mask: bool, spatial shape, the voxels averaged;
    vof_curve: (T,) venous output function or None; scores: float32, spatial shape, each
    candidate's AIF score (0 for voxels that were not candidates); vof_mask: bool, spatial
    shape, or None; baseline: the pre-bolus frames used for the baseline correction.
    """

    times_s: np.ndarray
    curve: np.ndarray
    voxel_mask: np.ndarray
    vof_curve: np.ndarray | None
    scores: np.ndarray
    vof_mask: np.ndarray | None = None
    baseline: slice | None = None


def _half_maximum_width(curves, times, peak_index) -> np.ndarray:
    """FWHM (s) of each curve (n, T) around its maximum, crossings linearly interpolated;
    a curve that never falls below half maximum on a side is measured to the window edge."""
    n, length = curves.shape
    rows = np.arange(n)
    half = 0.5 * curves[rows, peak_index][:, None]
    frame = np.arange(length)[None, :]
    below = curves < half
    left = np.where(below & (frame <= peak_index[:, None]), frame, -1).max(axis=1)
    right = np.where(below & (frame >= peak_index[:, None]), frame, length).min(axis=1)

    def crossing(i_below, i_above):
        y0, y1 = curves[rows, i_below], curves[rows, i_above]
        t0, t1 = times[i_below], times[i_above]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.clip((half[:, 0] - y0) / (y1 - y0), 0.0, 1.0)
        return t0 + np.nan_to_num(w) * (t1 - t0)

    has_left = left >= 0
    has_right = right < length
    t_left = np.where(
        has_left,
        crossing(np.clip(left, 0, length - 1), np.clip(left + 1, 0, length - 1)),
        times[0],
    )
    t_right = np.where(
        has_right,
        crossing(np.clip(right, 0, length - 1), np.clip(right - 1, 0, length - 1)),
        times[-1],
    )
    return np.maximum(t_right - t_left, np.median(np.diff(times)) * 1e-3)


def _trapezoid(curves, times) -> np.ndarray:
    return 0.5 * (curves[..., 1:] + curves[..., :-1]) @ np.diff(times)


def select_aif(conc, times_s, mask, n_voxels: int | None = None) -> AIFResult:
    """Select the AIF (and VOF) automatically from concentration curves.

    Parameters
    ----------
    conc : (..., T) concentration (ΔR2* in 1/s, or HU above baseline).
    times_s : (T,) acquisition times in seconds.
    mask : bool array of the spatial shape: where arteries may be looked for (the brain).
    n_voxels : how many arterial voxels to average (default: the config schema's
        ``aif.n_voxels``).
    """
    if n_voxels is None:
        n_voxels = int(schema_defaults()["aif"]["n_voxels"])
    if n_voxels < 1:
        raise ValueError(f"n_voxels must be ≥ 1, got {n_voxels}")
    conc = np.asarray(conc)
    times = np.asarray(times_s, dtype=float)
    n_frames = conc.shape[-1]
    if times.shape != (n_frames,):
        raise ValueError(f"times_s has shape {times.shape}, the data has {n_frames} frames")
    spatial = conc.shape[:-1]
    inside = np.asarray(mask).astype(bool) if mask is not None else np.ones(spatial, bool)
    if inside.shape != spatial:
        raise ValueError(f"mask has shape {inside.shape}, the data's spatial shape is {spatial}")
    index = np.flatnonzero(inside.reshape(-1))
    if index.size == 0:
        raise ValueError("the mask is empty: no voxel to choose an AIF from")

    curves = np.nan_to_num(
        conc.reshape(-1, n_frames)[index].astype(float), nan=0.0, posinf=0.0, neginf=0.0
    )
    # 1. baseline correction on the pre-bolus frames of the mean curve
    baseline = baseline_frames(curves.mean(axis=0), times)
    curves -= curves[:, baseline].mean(axis=1, keepdims=True)

    area = _trapezoid(curves, times)
    peak_index = np.argmax(curves, axis=1)
    peak = curves[np.arange(curves.shape[0]), peak_index]
    ttp = times[peak_index]
    n_base = len(range(*baseline.indices(n_frames)))
    noise = curves[:, baseline].std(axis=1, ddof=1) if n_base >= 3 else np.zeros_like(peak)

    # 2. candidates: the largest curves
    usable = np.flatnonzero((peak > 0) & (area > 0))
    if usable.size == 0:
        raise ValueError("no curve in the mask rises above its baseline: cannot find an AIF")
    by_area = usable[np.argsort(area[usable])[::-1]]
    n_candidates = max(
        int(np.ceil(CANDIDATE_AREA_FRACTION * usable.size)), CANDIDATE_MULTIPLE * n_voxels
    )
    candidates = by_area[: min(n_candidates, by_area.size)]

    # 3. drop noisy curves (keep at least n_voxels, the cleanest)
    cnr = peak[candidates] / np.maximum(noise[candidates], 1e-12)
    clean = candidates[cnr >= MIN_CNR]
    if clean.size < n_voxels:
        clean = candidates[np.argsort(cnr)[::-1][:n_voxels]]

    # 4. an artery feeds the tissue and peaks before most of it; a vein drains it and peaks
    #    after: drop candidates peaking later than the median tissue curve
    feeding = clean[ttp[clean] <= np.median(ttp[usable])]
    if feeding.size >= n_voxels:
        clean = feeding

    # 5. score: high, narrow, early, smooth
    width = _half_maximum_width(curves[clean], times, peak_index[clean])
    early = np.percentile(ttp[clean], EARLY_PERCENTILE)
    lateness = np.clip(ttp[clean] - early, 0.0, None)
    roughness = noise[clean] / peak[clean]
    score = (
        peak[clean]
        / width
        * np.exp(-lateness / LATE_PENALTY_S)
        / (1.0 + ROUGHNESS_WEIGHT * roughness)
    )
    order = np.argsort(score)[::-1]
    chosen = clean[order[: min(n_voxels, clean.size)]]

    # 6. the AIF
    curve = curves[chosen].mean(axis=0)
    curve = curve - curve[baseline].mean()

    scores = np.zeros(inside.size, dtype=np.float32)
    scores[index[clean]] = score
    voxel_mask = np.zeros(inside.size, dtype=bool)
    voxel_mask[index[chosen]] = True

    # VOF: late, large curves among the candidates not used for the AIF
    dt = float(np.median(np.diff(times)))
    aif_ttp = times[int(np.argmax(curve))]
    late = np.setdiff1d(candidates, chosen)
    late = late[ttp[late] >= aif_ttp + dt]
    vof_curve, vof_mask = None, None
    if late.size:
        venous = late[np.argsort(area[late])[::-1][:n_voxels]]
        candidate_vof = curves[venous].mean(axis=0)
        candidate_vof = candidate_vof - candidate_vof[baseline].mean()
        if _trapezoid(candidate_vof, times) >= 0.5 * _trapezoid(curve, times):
            vof_curve = candidate_vof
            vof_mask = np.zeros(inside.size, dtype=bool)
            vof_mask[index[venous]] = True
            vof_mask = vof_mask.reshape(spatial)

    return AIFResult(
        times_s=times.copy(),
        curve=curve,
        voxel_mask=voxel_mask.reshape(spatial),
        vof_curve=vof_curve,
        scores=scores.reshape(spatial),
        vof_mask=vof_mask,
        baseline=baseline,
    )


def aif_from_mask(conc, times_s, voxel_mask) -> AIFResult:
    """The AIF as the mean baseline-corrected curve of user-chosen voxels (participants.tsv
    ``aif_mask``), which override the automatic search; no VOF."""
    conc = np.asarray(conc)
    times = np.asarray(times_s, dtype=float)
    voxels = np.asarray(voxel_mask).astype(bool)
    if voxels.shape != conc.shape[:-1]:
        raise ValueError(f"AIF mask has shape {voxels.shape}, the data {conc.shape[:-1]}")
    if not voxels.any():
        raise ValueError("the AIF mask is empty on the DSC grid")
    curves = np.nan_to_num(conc[voxels].astype(float))
    baseline = baseline_frames(curves.mean(axis=0), times)
    curve = curves.mean(axis=0)
    curve = curve - curve[baseline].mean()
    return AIFResult(
        times_s=times.copy(),
        curve=curve,
        voxel_mask=voxels,
        vof_curve=None,
        scores=voxels.astype(np.float32),
        baseline=baseline,
    )


def aif_table(result: AIFResult) -> pd.DataFrame:
    """The AIF as a table with columns ``time`` (s) and ``concentration`` (AIF.tsv layout)."""
    return pd.DataFrame(
        {
            "time": np.asarray(result.times_s, dtype=float),
            "concentration": np.asarray(result.curve, dtype=float),
        }
    )
