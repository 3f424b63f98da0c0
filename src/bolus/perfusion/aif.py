"""Automatic arterial input function (AIF) and venous output function (VOF) selection.

In the spirit of Mouridsen 2006 and Peruzzo 2011: an arterial curve is large, early and
narrow, and clean; a venous sinus is large too but later and broader. Steps, all
vectorised over the candidate voxels:

1. every curve in the mask is baseline-corrected (mean of the pre-bolus frames → 0, the
   frames found by :func:`bolus.perfusion.concentration.baseline_frames` on the mean curve);
2. candidates: curves with a positive peak and area that peak no later than the median
   curve (an artery feeds the tissue and peaks before most of it, a vein drains it and
   peaks after), the largest by area: as many as 10 % of the mask's curves (Mouridsen: the
   AIF is among the largest curves), and at least ``5 · n_voxels`` (the largest curves
   whatever their peak time when fewer than ``n_voxels`` peak early). Ranking only the
   early curves keeps the arteries in when a moving head gives the edge voxels of CSF and
   of the sinus large, late, false curves: with a 2 mm drift on 4.6 mm voxels they filled
   the whole top 10 % and the AIF was the sinus;
3. noisy curves are dropped: peak below 5 × the baseline noise σ (contrast-to-noise < 5);
4. each candidate is scored

       score = peak / FWHM  ×  exp(−max(0, TTP − TTP_early) / 2 s)  ×  1 / (1 + 10 σ / peak)

   — high and narrow, penalised when it peaks later than the early arrivals (TTP_early: the
   5th percentile of the candidates' TTP; a vein peaks several seconds later and loses
   most of its score) and when it is rough;
5. the AIF is the mean of the ``n_voxels`` best-scoring curves, baseline-corrected again.

``method="cluster"`` replaces steps 4–5 by the cluster analysis of Mouridsen et al. (MRM
2006;55:524): the 25 % roughest candidates are dropped (roughness: baseline σ / peak, as
in the score; Mouridsen's ∫(C″)²dt of the area-normalised curve would drop the sharpest
boluses, the arteries, first), the rest are normalised to unit area, so that only their shapes
count, and grouped by k-means (:data:`CLUSTERS` clusters, k-means++ seeding with a fixed
seed); the cluster whose mean curve has the smallest first moment (∫t·C/∫C: the earliest,
narrowest bolus) is kept and split again into two, keeping the earlier one, until fewer
than 2·``n_voxels`` curves remain (at most :data:`MAX_SPLITS` times; Mouridsen split once,
which on simulated partial-volume arteries kept voxels of mean blood fraction 0.67–0.75
against 0.82–0.86 after three splits). Clusters of fewer than ``n_voxels``/2 curves are not
chosen. The AIF is the mean of the (not normalised) curves of that cluster. Partial-volume arterial
voxels carry a tissue tail and a flattened peak, noisy ones a rough shape: both have a
larger first moment or fall in other clusters.

VOF: among the largest curves (step 2's count, by area, whatever their peak time) not
chosen for the AIF, those peaking at least one frame interval after the AIF and returning
below half their peak over the last quarter of the series (:data:`MAX_VOF_TAIL`: a first
pass returns; the CSF edges of a moving head give large curves that ramp up and stay);
the mean of the ``n_voxels`` with the largest area. It is reported only if its area is at
least half the AIF's (a sinus carries the whole bolus; smaller late curves are tissue),
else None.

VOF scaling (``vof_scaling=True``): arterial voxels are small and partial-volumed, the
sinus is large, and both carry the same tracer, so the area under the AIF should equal that
under the VOF. The AIF is multiplied by ∫VOF/∫AIF (when a VOF was found), which corrects its
amplitude (and so absolute CBF and CBV) for partial volume; its shape is unchanged.

``vof_scaling="auto"`` (the default) scales only when the AIF has clearly lost area:
∫VOF/∫AIF > :data:`AUTO_VOF_RATIO` (1.5). A measured VOF carries 1.0–1.2 times the true
arterial area (a sinus is not perfectly pure either way; the simulator's is 1.15), so below
1.5 the unscaled AIF is the closer one (pure arteries: scaling would overestimate the AIF by
15–20 %), and above it the unscaled AIF is off by more than 1 − 1.2/1.5 = 20 %, more than
scaling can be. One-voxel arteries lose that much when the head moves by a fraction of a
voxel (ΔR2* of a mixed voxel is −ln of the *mean signal*, which the darkest component
barely moves): a 2 mm drift on 4.6 mm voxels left the AIF 38 % of its still-head area
(∫VOF/∫AIF 3.0), and CBF and CBV 2.3–2.6 times the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bolus.config import schema_defaults
from bolus.perfusion.concentration import baseline_frames

# vof_scaling="auto": scale only when ∫VOF/∫AIF exceeds this (module docstring)
AUTO_VOF_RATIO = 1.5
# VOF candidates: mean of the last quarter of the series at most this fraction of the peak
MAX_VOF_TAIL = 0.5

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
# method="cluster" (Mouridsen 2006): share of the roughest candidates dropped; clusters of
# the first and the later k-means; the k-means seed (reproducible selection); most splits
ROUGHEST_FRACTION = 0.25
CLUSTERS = 5
SECOND_CLUSTERS = 2
KMEANS_SEED = 0
MAX_SPLITS = 3
AIF_METHODS = ("score", "cluster")


@dataclass(frozen=True)
class AIFResult:
    """The AIF and where it came from.

    times_s: (T,) acquisition times; curve: (T,) baseline-corrected AIF (same units as the
    input concentration); voxel_mask: bool, spatial shape, the voxels averaged;
    vof_curve: (T,) venous output function or None; scores: float32, spatial shape, each
    candidate's AIF score (0 for voxels that were not candidates); vof_mask: bool, spatial
    shape, or None; baseline: the pre-bolus frames used for the baseline correction;
    method: how the arterial voxels were chosen; vof_scale: the factor ∫VOF/∫AIF the curve
    was multiplied by (1.0 without VOF scaling).
    """

    times_s: np.ndarray
    curve: np.ndarray
    voxel_mask: np.ndarray
    vof_curve: np.ndarray | None
    scores: np.ndarray
    vof_mask: np.ndarray | None = None
    baseline: slice | None = None
    method: str = "score"
    vof_scale: float = 1.0


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


def _first_moment(curves, times) -> np.ndarray:
    """∫t·C dt / ∫C dt of each curve (n, T), its negative parts ignored."""
    positive = np.clip(curves, 0.0, None)
    return (positive @ times) / np.maximum(positive.sum(axis=-1), 1e-12)


def _earliest_cluster(shapes, times, k: int, min_size: int) -> np.ndarray:
    """Indices (into ``shapes``) of the k-means cluster whose mean shape has the smallest
    first moment, among clusters of at least ``min_size`` curves (all if none is)."""
    from scipy.cluster.vq import kmeans2

    k = min(k, shapes.shape[0])
    if k < 2:
        return np.arange(shapes.shape[0])
    _, labels = kmeans2(shapes, k, minit="++", seed=KMEANS_SEED)
    sizes = np.bincount(labels, minlength=k)
    means = np.stack(
        [shapes[labels == c].mean(axis=0) if sizes[c] else shapes[0] for c in range(k)]
    )
    moment = np.where(sizes >= min(min_size, sizes.max()), _first_moment(means, times), np.inf)
    return np.flatnonzero(labels == int(np.argmin(moment)))


def _cluster_selection(curves, times, roughness, n_voxels: int) -> np.ndarray:
    """Mouridsen 2006 on candidate curves (n, T) with their roughness (baseline σ / peak):
    indices of the arterial cluster."""
    area = _trapezoid(curves, times)
    shapes = curves / np.where(area > 0, area, 1.0)[:, None]
    n_keep = max(
        int(np.ceil((1.0 - ROUGHEST_FRACTION) * shapes.shape[0])), min(n_voxels, shapes.shape[0])
    )
    smooth = np.argsort(roughness, kind="stable")[:n_keep]
    min_size = max(2, n_voxels // 2)
    first = smooth[_earliest_cluster(shapes[smooth], times, CLUSTERS, min_size)]
    for _ in range(MAX_SPLITS):
        if first.size < 2 * n_voxels:
            break
        first = first[_earliest_cluster(shapes[first], times, SECOND_CLUSTERS, min_size)]
    return first


def select_aif(
    conc,
    times_s,
    mask,
    n_voxels: int | None = None,
    *,
    method: str | None = None,
    vof_scaling: bool | str | None = None,
) -> AIFResult:
    """Select the AIF (and VOF) automatically from concentration curves.

    Parameters
    ----------
    conc : (..., T) concentration (ΔR2* in 1/s, or HU above baseline).
    times_s : (T,) acquisition times in seconds.
    mask : bool array of the spatial shape: where arteries may be looked for (the brain).
    n_voxels : how many arterial voxels to average (``score``; the smallest cluster kept by
        ``cluster`` is n_voxels/2) (default: the config schema's ``aif.n_voxels``).
    method : ``"score"`` or ``"cluster"`` (module docstring; default: ``aif.method``).
    vof_scaling : scale the AIF to the VOF's area: True, False, or ``"auto"`` (only when
        ∫VOF/∫AIF > :data:`AUTO_VOF_RATIO`) (default: ``aif.vof_scaling``).
    """
    defaults = schema_defaults()["aif"]
    if n_voxels is None:
        n_voxels = int(defaults["n_voxels"])
    method = defaults["method"] if method is None else method
    vof_scaling = defaults["vof_scaling"] if vof_scaling is None else vof_scaling
    if vof_scaling not in (True, False, "auto"):
        raise ValueError(f"vof_scaling must be true, false or 'auto', got {vof_scaling!r}")
    if vof_scaling != "auto":
        vof_scaling = bool(vof_scaling)  # numpy booleans too: `is True` below
    if method not in AIF_METHODS:
        raise ValueError(f"unknown AIF method {method!r}; expected one of {AIF_METHODS}")
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

    # 2. candidates: the largest curves among those peaking no later than the median curve
    usable = np.flatnonzero((peak > 0) & (area > 0))
    if usable.size == 0:
        raise ValueError("no curve in the mask rises above its baseline: cannot find an AIF")
    n_candidates = max(
        int(np.ceil(CANDIDATE_AREA_FRACTION * usable.size)), CANDIDATE_MULTIPLE * n_voxels
    )
    by_area = usable[np.argsort(area[usable])[::-1]]
    largest = by_area[: min(n_candidates, by_area.size)]  # where the VOF is looked for
    early_enough = by_area[ttp[by_area] <= np.median(ttp[usable])]
    candidates = early_enough[:n_candidates] if early_enough.size >= n_voxels else largest

    # 3. drop noisy curves (keep at least n_voxels, the cleanest)
    cnr = peak[candidates] / np.maximum(noise[candidates], 1e-12)
    clean = candidates[cnr >= MIN_CNR]
    if clean.size < n_voxels:
        clean = candidates[np.argsort(cnr)[::-1][:n_voxels]]

    # 4. score: high, narrow, early, smooth
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
    if method == "cluster":
        chosen = clean[_cluster_selection(curves[clean], times, roughness, n_voxels)]
    else:
        order = np.argsort(score)[::-1]
        chosen = clean[order[: min(n_voxels, clean.size)]]

    # 5. the AIF
    curve = curves[chosen].mean(axis=0)
    curve = curve - curve[baseline].mean()

    scores = np.zeros(inside.size, dtype=np.float32)
    scores[index[clean]] = score
    voxel_mask = np.zeros(inside.size, dtype=bool)
    voxel_mask[index[chosen]] = True

    # VOF: late, large curves among the candidates not used for the AIF
    dt = float(np.median(np.diff(times)))
    aif_ttp = times[int(np.argmax(curve))]
    late = np.setdiff1d(largest, chosen)
    late = late[ttp[late] >= aif_ttp + dt]
    # a vein's first pass returns: over the last quarter of the series it is below half its
    # peak (recirculation keeps 10–40 %); a curve still near its peak there is a drift of
    # the baseline (CSF edges of a moving head) or leakage, and would inflate the VOF
    tail = curves[late, -max(n_frames // 4, 1) :].mean(axis=1)
    late = late[tail <= MAX_VOF_TAIL * peak[late]]
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

    vof_scale = 1.0
    if vof_scaling and vof_curve is not None:
        ratio = float(_trapezoid(vof_curve, times) / _trapezoid(curve, times))
        if vof_scaling is True or ratio > AUTO_VOF_RATIO:
            vof_scale = ratio
            curve = curve * vof_scale

    return AIFResult(
        times_s=times.copy(),
        curve=curve,
        voxel_mask=voxel_mask.reshape(spatial),
        vof_curve=vof_curve,
        scores=scores.reshape(spatial),
        vof_mask=vof_mask,
        baseline=baseline,
        method=method,
        vof_scale=vof_scale,
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
    """The AIF as a table with columns ``time`` (s) and ``concentration`` (AIF.tsv layout),
    and ``vof`` (the venous output function, same units) when one was found."""
    table = pd.DataFrame(
        {
            "time": np.asarray(result.times_s, dtype=float),
            "concentration": np.asarray(result.curve, dtype=float),
        }
    )
    if result.vof_curve is not None:
        table["vof"] = np.asarray(result.vof_curve, dtype=float)
    return table
