"""Perfusion maps from concentration curves and an AIF: CBF, CBV, MTT, Tmax, TTP.

Units and definitions:

======  ============  ==================================================================
cbf     ml/100 g/min  ``cbf_scale · max_t b(t)`` — the peak of the deconvolved,
                      flow-scaled residue b = (ρ/k_H)·F·R (1/s), with
                      ``cbf_scale`` = 60 · 100 · k_H / ρ, so CBF = 6000 · F
cbv     ml/100 g      ``cbv_scale · ∫C_t dt / ∫C_a dt`` — trapezoid over the whole
                      acquisition window, from the curves, not from the residue
mtt     s             ``60 · cbv / cbf`` (central volume theorem); 0 where cbf is tiny
tmax    s             time of the residue's maximum, relative to the AIF
ttp     s             time of the tissue curve's maximum, relative to the first frame
======  ============  ==================================================================

Tmax of the circulant methods: the residue has 2T points and is periodic; a maximum at
index k ≥ T is the wrapped image of a negative delay, (k − 2T)·Δt (tissue earlier than the
AIF, e.g. an AIF picked downstream of the tissue's supply). Such delays are reported as 0
unless ``negative_tmax=True`` (then the negative value is kept). sSVD cannot represent them:
its maximum then sits at index 0.

Sub-frame refinement (``subframe=True``, default): Tmax and TTP move from the sampled
maximum to the vertex of the parabola through it and its two neighbours (when the three
points are concave), which cuts the quantisation to the frame interval. The shift is
limited to half an interval each way. For Tmax the neighbours are taken circularly for the
circulant methods and the refinement is skipped at the ends of an sSVD residue.

Outputs are float32 arrays of the spatial shape, finite everywhere, 0 outside the mask.
CBF and CBV are clipped at 0 (noise can make them negative).
"""

from __future__ import annotations

import numpy as np

from bolus.config import PerfusionConstants
from bolus.perfusion.deconvolution import (
    SVDDeconvolution,
    map_blocks,
    resample_curves,
    single_threaded_blas,
)
from bolus.perfusion.methods import METHODS, get_method

MAP_NAMES = ("cbf", "cbv", "mtt", "tmax", "ttp")

# CBF (ml/100 g/min) below which MTT is undefined and reported as 0.
MIN_CBF_FOR_MTT = 1e-3

# voxels per block (one thread's work at a time): bounds the memory of the 2T-long residues
_BLOCK_VOXELS = 16384


def trapezoid_weights(times_s) -> np.ndarray:
    """Weights w with ∫ curve dt ≈ curve @ w (trapezoid rule, non-uniform times allowed)."""
    steps = np.diff(np.asarray(times_s, dtype=float))
    weights = np.zeros(steps.size + 1)
    weights[:-1] += 0.5 * steps
    weights[1:] += 0.5 * steps
    return weights


def trapezoid_area(curves, times_s) -> np.ndarray:
    """∫ curve dt by the trapezoid rule over ``times_s`` (non-uniform allowed), last axis."""
    curves = np.asarray(curves)
    weights = trapezoid_weights(times_s)
    if curves.dtype == np.float32:  # one single-precision product, accumulated in float64
        return (curves @ weights.astype(np.float32)).astype(float)
    return curves.astype(float) @ weights


def parabolic_peak_offset(left, centre, right) -> np.ndarray:
    """Vertex offset (in samples, within ±0.5) of the parabola through three equally spaced
    points around a maximum; 0 where they are not concave."""
    left, centre, right = (np.asarray(a, dtype=float) for a in (left, centre, right))
    curvature = left - 2.0 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = 0.5 * (left - right) / curvature
    return np.where(curvature < 0, np.clip(np.nan_to_num(offset), -0.5, 0.5), 0.0)


def _refined_peak_time(curves, times_s, index) -> np.ndarray:
    """Time of the vertex of the parabola through the maximum at ``index`` and its two
    neighbours on a possibly non-uniform grid; the sampled time at the ends or where the
    points are not concave. Limited to halfway to each neighbour."""
    times = np.asarray(times_s, dtype=float)
    n = times.size
    inner = np.clip(index, 1, n - 2)
    rows = np.arange(curves.shape[0])
    x0, x1, x2 = times[inner - 1], times[inner], times[inner + 1]
    y0, y1, y2 = curves[rows, inner - 1], curves[rows, inner], curves[rows, inner + 1]
    numerator = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    denominator = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = x1 - 0.5 * numerator / denominator
    # concave: the middle point lies above the chord between its neighbours
    chord = y0 + (y2 - y0) * (x1 - x0) / (x2 - x0)
    ok = (index == inner) & (y1 > chord) & np.isfinite(vertex)
    vertex = np.clip(np.nan_to_num(vertex), 0.5 * (x0 + x1), 0.5 * (x1 + x2))
    return np.where(ok, vertex, times[index])


def _thresholds_for(method: str, thresholds: dict) -> dict:
    """SVDDeconvolution keywords from ``thresholds``: the keywords themselves or their config
    names (bolus.perfusion.methods), so a config's ``svd`` section can be passed as is."""
    entry = get_method(method)
    known = {"threshold_ladder", "methods"} | set(entry.options.values())
    known |= {key for m in METHODS.values() for key in (*m.options, *m.options.values())}
    unknown = set(thresholds) - known
    if unknown:
        raise TypeError(f"perfusion_maps got unknown threshold option(s): {sorted(unknown)}")
    options = {
        keyword: thresholds.get(keyword, thresholds.get(key))
        for key, keyword in entry.options.items()
    }
    if entry.name == "osvd" and thresholds.get("threshold_ladder") is not None:
        options["threshold_ladder"] = thresholds["threshold_ladder"]
    return options


def perfusion_maps(
    conc,
    times_s,
    aif_curve,
    method: str,
    mask=None,
    constants: PerfusionConstants | None = None,
    *,
    subframe: bool = True,
    negative_tmax: bool = False,
    tikhonov: float | None = None,
    quadrature: str = "linear",
    device: str | None = None,
    **thresholds,
) -> dict[str, np.ndarray]:
    """CBF, CBV, MTT, Tmax and TTP maps of one subject.

    Parameters
    ----------
    conc : (..., T) concentration curves (ΔR2* in 1/s, or HU above baseline for CT).
    times_s : (T,) acquisition times in seconds (non-uniform allowed).
    aif_curve : (T,) baseline-corrected arterial curve on the same times.
    method : ``"ssvd"``, ``"csvd"`` or ``"osvd"``.
    mask : optional boolean array of the spatial shape; maps are 0 outside it.
    constants : :class:`PerfusionConstants` (default: the schema's defaults).
    subframe : parabolic sub-frame refinement of Tmax and TTP.
    negative_tmax : keep negative Tmax of circulant methods instead of clipping to 0.
    tikhonov, quadrature, device : passed to :class:`SVDDeconvolution`.
    **thresholds : ``threshold`` (sSVD/cSVD), ``oscillation_index`` (oSVD),
        ``threshold_ladder`` (oSVD), or their config names ``ssvd_threshold``,
        ``csvd_threshold``, ``osvd_oscillation_index`` — so a config's ``svd`` block can be
        passed as is (its ``methods`` key is ignored). Missing ones: schema defaults.

    Returns
    -------
    dict with exactly the keys ``cbf``, ``cbv``, ``mtt``, ``tmax``, ``ttp``: float32 arrays of
    shape ``conc.shape[:-1]``.
    """
    method = get_method(method).name
    conc = np.asarray(conc)
    times = np.asarray(times_s, dtype=float)
    aif = np.asarray(aif_curve, dtype=float)
    n_frames = conc.shape[-1]
    if times.shape != (n_frames,) or aif.shape != (n_frames,):
        raise ValueError(
            f"conc has {n_frames} frames, times_s {times.shape}, AIF {aif.shape}: they must agree"
        )
    spatial = conc.shape[:-1]
    inside = np.ones(spatial, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    if inside.shape != spatial:
        raise ValueError(f"mask has shape {inside.shape}, the data's spatial shape is {spatial}")
    constants = constants or PerfusionConstants.from_config(None)

    aif_area = trapezoid_area(aif, times)
    if not np.isfinite(aif_area) or aif_area <= 0:
        raise ValueError(f"the AIF has no positive area ({aif_area:.3g}); check the AIF curve")

    model = SVDDeconvolution(
        aif,
        times,
        method,
        tikhonov=tikhonov,
        quadrature=quadrature,
        device=device,
        **_thresholds_for(method, thresholds),
    )
    # the voxels in the array's own memory order (a NIfTI series is Fortran-ordered): a view
    # and one gather, not a C-order copy of the whole series first
    order = "F" if conc.flags.f_contiguous and not conc.flags.c_contiguous else "C"
    where = np.flatnonzero(inside.reshape(-1, order=order))
    curves = conc.reshape(-1, n_frames, order=order)[where]
    values = {name: np.zeros(curves.shape[0]) for name in MAP_NAMES}

    def work(start, stop):
        block = curves[start:stop].astype(np.float32)  # a copy: the input is never modified
        np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        part = _block_maps(block, times, aif_area, model, constants, subframe, negative_tmax)
        for name in MAP_NAMES:
            values[name][start:stop] = part[name]

    if model.device == "cuda":  # the GPU takes all voxels at once
        work(0, curves.shape[0])
    else:
        with single_threaded_blas():
            map_blocks(work, curves.shape[0], _BLOCK_VOXELS)

    maps = {}
    for name in MAP_NAMES:
        full = np.zeros(spatial, dtype=np.float32, order=order)
        full.reshape(-1, order=order)[where] = np.nan_to_num(
            values[name], nan=0.0, posinf=0.0, neginf=0.0
        )
        maps[name] = full
    # MTT from the float32 CBV and CBF, so that mtt = 60·cbv/cbf holds for the outputs
    cbf, cbv = maps["cbf"], maps["cbv"]
    defined = inside & (cbf >= MIN_CBF_FOR_MTT)
    mtt = np.zeros(spatial, dtype=np.float32)
    mtt[defined] = np.float32(60.0) * cbv[defined] / cbf[defined]
    maps["mtt"] = np.nan_to_num(mtt, nan=0.0, posinf=0.0, neginf=0.0)
    return maps


def _block_maps(curves, times, aif_area, model, constants, subframe, negative_tmax):
    """Maps of a block of voxels (n, T) → dict of (n,) float64 arrays (MTT filled later)."""
    rows = np.arange(curves.shape[0])
    cbv = constants.cbv_scale * trapezoid_area(curves, times) / aif_area

    if model.device == "cuda":
        residue = model.fit(curves, full=True)  # (n, L) on model.times_s
    else:
        if not model.uniform:
            curves_on_grid = resample_curves(curves, times, model.times_s).astype(np.float32)
        residue = model.fit_block(curves if model.uniform else curves_on_grid)[0]
    length = residue.shape[1]
    peak = np.argmax(residue, axis=1)
    cbf = constants.cbf_scale * residue[rows, peak]

    position = peak.astype(float)
    if subframe:
        if model.method == "ssvd":
            interior = (peak > 0) & (peak < length - 1)
            left = residue[rows, np.clip(peak - 1, 0, length - 1)]
            right = residue[rows, np.clip(peak + 1, 0, length - 1)]
            offset = np.where(interior, parabolic_peak_offset(left, residue[rows, peak], right), 0)
        else:
            left = residue[rows, (peak - 1) % length]
            right = residue[rows, (peak + 1) % length]
            offset = parabolic_peak_offset(left, residue[rows, peak], right)
        position = position + offset
    if model.method != "ssvd":
        # indices in the second half are the wrapped image of negative delays
        position = np.where(position >= length / 2, position - length, position)
    tmax = position * model.dt_s
    if not negative_tmax:
        tmax = np.clip(tmax, 0.0, None)

    peak_frame = np.argmax(curves, axis=1)
    if subframe:
        ttp = _refined_peak_time(curves, times, peak_frame) - times[0]
    else:
        ttp = times[peak_frame] - times[0]

    return {
        "cbf": np.clip(cbf, 0.0, None),
        "cbv": np.clip(cbv, 0.0, None),
        "mtt": np.zeros_like(cbv),
        "tmax": tmax,
        "ttp": np.clip(ttp, 0.0, None),
    }
