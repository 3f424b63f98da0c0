"""Deconvolution of tissue curves by the AIF with truncated SVD: sSVD, cSVD, oSVD.

The indicator-dilution model: ``C_t(t) = (ρ/k_H) · F · (C_a ⊗ R)(t)``. On a uniform grid of
step Δt the convolution is a matrix product ``c = A · b`` with ``b[k] = (ρ/k_H)·F·R(k·Δt)``
(1/s), the flow-scaled residue at the grid points.

Quadrature (how the integral becomes ``A``)
-------------------------------------------
``"linear"`` (default; Wu 2003, also Sourbron 2007's "volume" weighting for the interior):
AIF and residue both vary linearly between samples, so each matrix element is the integral
of the AIF interpolant against a hat function of the residue,

    A[i, j] = Δt · (C_a[i−j−1] + 4·C_a[i−j] + C_a[i−j+1]) / 6      (C_a[−1] = 0)

— a function of the lag only, so the circulant methods stay shift-invariant, and b[k]
are point values of the residue. ``"rectangle"`` (Østergaard 1996): ``A[i, j] = Δt·C_a[i−j]``;
each b[k] is then the residue's mean over the frame centred on k·Δt, so a residue with a
cusp at t = 0 (exponential) gets b[0] ≈ b(0)/2. Measured on the simulated demo cohort
(``benchmarks/bench_accuracy.py``), the linear quadrature moves grey-matter CBF of cSVD
from 0.71 to 0.72 and of oSVD from 0.70 to 0.72 of truth, and cuts cSVD's white-matter
Tmax MAE from 6.4 to 5.1 s; sSVD is unchanged within 0.02.

Methods
-------
``ssvd``  lower-triangular Toeplitz A (T×T); singular values below ``threshold · s_max`` are
          dropped (Østergaard 1996; default 0.2). Assumes the tissue cannot see the bolus
          before the AIF: sensitive to the AIF-tissue delay.
``csvd``  block-circulant A (2T×2T, AIF and tissue zero-padded to 2T; Wu 2003): the circular
          convolution is shift-invariant, so a delay of either sign only rotates the
          residue; relative threshold (default 0.1).
``osvd``  block-circulant A with the threshold chosen per voxel: the smallest candidate on a
          ladder whose residue has an oscillation index (Wu 2003)

              OI = 1/(L · f_max) · Σ_{k=2}^{L−1} |f[k] − 2 f[k−1] + f[k−2]|

          at most the target (``oscillation_index``; L = 2T, f the residue over all 2T
          points); voxels that never meet it get the largest candidate threshold.

Optionally ``tikhonov=λ`` replaces the truncation of sSVD/cSVD by Tikhonov filter factors
s²/(s² + (λ·s_max)²) (a smooth roll-off instead of a hard cut).

Defaults of the thresholds come from the config schema
(``bolus.config.schema_defaults()['svd']``).

Speed: one SVD per AIF (the model object, dipy style), then one matrix product for all
voxels. For oSVD the truncated pseudo-inverses of the ladder are nested (each keeps the
components whose singular value is ≥ p·s_max): the curves are projected once onto the left
singular vectors (one matrix product), the residue with the components of the lowest
candidate is one more, and each step up the ladder subtracts the components between two
cut-offs from the residue and from its second difference (an outer-product update of the
voxels still searching). Every candidate is evaluated for a voxel until it first meets the
target, which is, walking the ladder from the lowest threshold up, exactly "the smallest
passing threshold"; voxels leave the batch as they settle. No loop over voxels.

Irregular time axes: the convolution is evaluated on a uniform grid. Jitter of a few
percent (every interval within :data:`JITTER_TOLERANCE`, 25 %, of the median) is resampled at the
median interval; a genuinely variable sampling (e.g. CT perfusion, 1 s then 3 s) at the
shortest interval, so the fast part is not smoothed away. AIF and tissue are resampled
alike by linear interpolation (consistent with the linear quadrature);
:attr:`SVDDeconvolution.times_s` is the grid the residue lives on. A uniform time vector
(all intervals within 0.1 % of the median) is used as is.

Devices: ``device="cuda"`` (or ``"auto"`` when a GPU is present) runs the matrix products
and the oSVD search with torch on the GPU; torch is imported only then.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from bolus.config import schema_defaults
from bolus.perfusion.methods import METHODS as DECONVOLUTION_METHODS

METHODS = tuple(DECONVOLUTION_METHODS)
QUADRATURES = ("linear", "rectangle")

# Relative frame-interval spread below which the time vector counts as uniform.
UNIFORM_TOLERANCE = 1e-3
# Relative spread below which non-uniform times count as jitter (resampled at the median).
JITTER_TOLERANCE = 0.25

# oSVD candidate thresholds (relative to the largest singular value): 0.025 … 0.95 in steps
# of 0.025 (Wu 2003 and the DSC-MRI toolbox search 5–95 % in steps of 5 %). Candidates that
# keep the same singular values are one step.
OSVD_LADDER = np.round(np.arange(0.95, 0.0249, -0.025), 3)

# voxels per block of the oSVD search: its working arrays (block · 2T · 4 bytes, a few of
# them) stay in the CPU cache
_OSVD_BLOCK = 2048
# voxels per block of the plain matrix products (bounds the float32 temporaries)
_BLOCK_VOXELS = 16384
# most worker threads (each runs single-threaded BLAS on its own blocks)
MAX_WORKERS = 8


def worker_count() -> int:
    """CPU cores this process may use (its affinity mask, and ``OMP_NUM_THREADS`` when set,
    as schedulers such as Snakemake and Slurm set it to a job's threads), at most
    :data:`MAX_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        cores = min(cores, int(limit))
    return max(1, min(cores, MAX_WORKERS))


@contextmanager
def single_threaded_blas():
    """BLAS limited to one thread inside the block: the products here are small, and
    OpenBLAS's own threads cost more than they give on them (measured 5× slower on a busy
    2-core machine); parallelism comes from :func:`map_blocks` instead."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:  # finding the loaded libraries takes ~10 ms: once
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    with _BLAS_CONTROLLER.limit(limits=1, user_api="blas"):
        yield


_BLAS_CONTROLLER = None


def map_blocks(function, n_items: int, block: int) -> list:
    """``function(start, stop)`` over consecutive blocks of ``n_items``, on
    :func:`worker_count` threads (numpy releases the GIL in its products and reductions);
    results in block order."""
    starts = range(0, n_items, block)
    workers = min(worker_count(), len(starts))
    if workers <= 1:
        return [function(start, min(start + block, n_items)) for start in starts]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda start: function(start, min(start + block, n_items)), starts))


def is_uniform(times_s, tolerance: float = UNIFORM_TOLERANCE) -> bool:
    """True when every frame interval is within ``tolerance`` (relative) of the median."""
    steps = np.diff(np.asarray(times_s, dtype=float))
    median = np.median(steps)
    return bool(np.all(np.abs(steps - median) <= tolerance * median))


def uniform_grid(times_s) -> np.ndarray:
    """The uniform grid ``t_0 + k·Δt`` covering ``times_s``: Δt = the median interval for
    jittered times, the shortest interval for genuinely variable sampling."""
    times = np.asarray(times_s, dtype=float)
    steps = np.diff(times)
    dt = float(np.median(steps))
    if not is_uniform(times, JITTER_TOLERANCE):
        dt = float(steps.min())
    n = int(np.floor((times[-1] - times[0]) / dt + 1e-6)) + 1
    return times[0] + dt * np.arange(n)


def _brackets(times_s, grid_s):
    """(left, right, weight) of linear interpolation from ``times_s`` (increasing) onto
    ``grid_s``: value = (1 − weight)·c[left] + weight·c[right], end values held."""
    times = np.asarray(times_s, dtype=float)
    grid = np.asarray(grid_s, dtype=float)
    right = np.clip(np.searchsorted(times, grid, side="right"), 1, times.size - 1)
    left = right - 1
    weight = np.clip((grid - times[left]) / (times[right] - times[left]), 0.0, 1.0)
    return left, right, weight


def interpolation_matrix(times_s, grid_s, dtype=np.float64) -> np.ndarray:
    """(T, G) weights of linear interpolation from ``times_s`` (T,) (increasing) onto
    ``grid_s`` (G,), holding the end values beyond ``times_s``: ``curves @ matrix`` is the
    interpolation of every (..., T) curve. Two weights per column, summing to 1."""
    left, right, weight = _brackets(times_s, grid_s)
    matrix = np.zeros((np.size(times_s), weight.size), dtype)
    columns = np.arange(weight.size)
    matrix[left, columns] = 1.0 - weight
    matrix[right, columns] = weight  # right = left + 1: no column entry written twice
    return matrix


def resample_curves(curves, times_s, grid_s):
    """Linear interpolation of (..., T) curves sampled at ``times_s`` onto ``grid_s`` (last
    axis), holding the end values beyond the acquisition; float32 curves stay float32.

    One matrix product over all curves (:func:`interpolation_matrix`), several times faster
    than gathering the bracketing frames. A non-finite value would spread through the
    product to its whole curve: such curves take the gather, where it spoils only the grid
    points it brackets.
    """
    curves = np.asarray(curves)
    dtype = np.float32 if curves.dtype == np.float32 else np.float64
    flat = curves.reshape(-1, curves.shape[-1])
    out = flat.astype(dtype, copy=False) @ interpolation_matrix(times_s, grid_s, dtype)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        left, right, weight = _brackets(times_s, grid_s)
        rows = flat[bad].astype(dtype)
        out[bad] = rows[:, left] * (1.0 - weight) + rows[:, right] * weight
    return out.reshape(curves.shape[:-1] + (out.shape[1],))


def convolution_kernel(aif, quadrature: str = "linear", length: int | None = None) -> np.ndarray:
    """Weights per lag (without Δt) of the discretised convolution, ``length`` lags.

    ``linear``: (C_a[m−1] + 4·C_a[m] + C_a[m+1]) / 6 with C_a = 0 outside the window
    (the zero padding of the circulant methods); ``rectangle``: C_a[m].
    """
    aif = np.asarray(aif, dtype=float)
    length = aif.size if length is None else int(length)
    padded = np.zeros(length + 2)
    padded[1 : 1 + min(aif.size, length + 1)] = aif[: length + 1]
    if quadrature == "rectangle":
        return padded[1:-1].copy()
    if quadrature == "linear":
        return (padded[:-2] + 4.0 * padded[1:-1] + padded[2:]) / 6.0
    raise ValueError(f"unknown quadrature {quadrature!r}; choose one of {QUADRATURES}")


def convolution_matrix(aif, dt_s: float, quadrature: str = "linear") -> np.ndarray:
    """Lower-triangular Toeplitz matrix of the causal convolution, ``A[i, j] = Δt·k[i−j]``."""
    kernel = convolution_kernel(aif, quadrature)
    n = kernel.size
    lag = np.arange(n)[:, None] - np.arange(n)[None, :]
    return np.where(lag >= 0, dt_s * kernel[np.clip(lag, 0, None)], 0.0)


def block_circulant_matrix(aif, dt_s: float, quadrature: str = "linear") -> np.ndarray:
    """Block-circulant matrix (2T×2T) of the AIF zero-padded to 2T (Wu 2003),
    ``D[i, j] = Δt·k[(i − j) mod 2T]``."""
    aif = np.asarray(aif, dtype=float)
    size = 2 * aif.size
    kernel = convolution_kernel(aif, quadrature, size)
    lag = (np.arange(size)[:, None] - np.arange(size)[None, :]) % size
    return dt_s * kernel[lag]


def oscillation_index(residue) -> np.ndarray:
    """Wu 2003 oscillation index of residues (..., L): Σ|second difference| / (L · max).

    Residues whose maximum is ≤ 0 get +inf (they can never pass a target).
    """
    f = np.asarray(residue, dtype=float)
    length = f.shape[-1]
    roughness = np.abs(f[..., 2:] - 2.0 * f[..., 1:-1] + f[..., :-2]).sum(axis=-1)
    f_max = f.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        oi = roughness / (length * f_max)
    return np.where(f_max > 0, oi, np.inf)


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (imports torch only to ask)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class SVDDeconvolution:
    """Truncated-SVD deconvolution by one AIF, computed once and applied to any voxels.

    Parameters
    ----------
    aif : (T,) arterial concentration (ΔR2* in 1/s or HU), baseline-corrected.
    times_s : (T,) acquisition times in seconds (may be non-uniform, see module doc).
    method : ``"ssvd"``, ``"csvd"`` or ``"osvd"``.
    threshold : relative singular-value cut-off for sSVD/cSVD (default from the schema:
        ``ssvd_threshold`` or ``csvd_threshold``). Ignored by oSVD.
    oscillation_index : oSVD target OI (default ``osvd_oscillation_index``).
    threshold_ladder : oSVD candidate thresholds (default :data:`OSVD_LADDER`).
    tikhonov : sSVD/cSVD only: Tikhonov regularisation λ relative to s_max instead of the
        truncation (``threshold`` is then ignored).
    quadrature : ``"linear"`` (Wu 2003; default) or ``"rectangle"`` (module doc).
    device : ``None``/``"cpu"`` (numpy), ``"cuda"`` (torch on the GPU; error without one),
        or ``"auto"`` (the GPU when torch sees one, else numpy).

    Attributes
    ----------
    times_s : the uniform grid (s) that curves are deconvolved on (the input if uniform).
    dt_s : its step.
    residue_length : T for sSVD, 2T for the circulant methods (T = len(times_s)).
    singular_values : of the convolution matrix, descending.
    device : ``"cpu"`` or ``"cuda"``.
    """

    def __init__(
        self,
        aif,
        times_s,
        method: str = "osvd",
        threshold: float | None = None,
        oscillation_index: float | None = None,
        *,
        threshold_ladder=None,
        tikhonov: float | None = None,
        quadrature: str = "linear",
        device: str | None = None,
    ):
        method = str(method).lower()
        if method not in METHODS:
            raise ValueError(f"unknown deconvolution method {method!r}; choose one of {METHODS}")
        aif = np.asarray(aif, dtype=float)
        times = np.asarray(times_s, dtype=float)
        if aif.ndim != 1 or times.shape != aif.shape:
            raise ValueError(
                f"AIF {aif.shape} and times_s {times.shape} must be 1-D of the same length"
            )
        if aif.size < 3 or np.any(np.diff(times) <= 0):
            raise ValueError("times_s must hold at least 3 strictly increasing acquisition times")
        if not np.all(np.isfinite(aif)) or aif.max() <= 0:
            raise ValueError("AIF must be finite with a positive peak (is it baseline-corrected?)")
        if tikhonov is not None and (method == "osvd" or not tikhonov > 0):
            raise ValueError("tikhonov must be > 0 and applies to ssvd and csvd only")

        # the method's option defaults, by SVDDeconvolution keyword (schema, via the registry)
        defaults = DECONVOLUTION_METHODS[method].keywords(schema_defaults()["svd"])
        self.method = method
        self.quadrature = quadrature
        self.tikhonov = None if tikhonov is None else float(tikhonov)
        self.device = _resolve_device(device)
        self.acquisition_times_s = times
        self.uniform = is_uniform(times)
        self.times_s = times if self.uniform else uniform_grid(times)
        self.dt_s = float(self.times_s[1] - self.times_s[0])
        self.aif = aif if self.uniform else resample_curves(aif, times, self.times_s)
        n = self.times_s.size
        self.n_frames = n

        if method == "ssvd":
            matrix = convolution_matrix(self.aif, self.dt_s, quadrature)
        else:
            matrix = block_circulant_matrix(self.aif, self.dt_s, quadrature)
        self.residue_length = matrix.shape[0]
        with single_threaded_blas():
            u, s, vt = np.linalg.svd(matrix)
        self.singular_values = s

        if method == "osvd":
            self.threshold = None
            self.oscillation_index = float(
                defaults["oscillation_index"] if oscillation_index is None else oscillation_index
            )
            ladder = OSVD_LADDER if threshold_ladder is None else threshold_ladder
            self.threshold_ladder = np.unique(np.round(np.asarray(ladder, dtype=float), 6))[::-1]
            if self.threshold_ladder.size == 0 or np.any(self.threshold_ladder <= 0):
                raise ValueError("oSVD threshold ladder must hold positive thresholds")
            # (number of kept components, smallest candidate keeping exactly those), by
            # increasing number: candidates that keep the same components are one step
            kept = np.array([int(np.sum(s >= p * s[0])) for p in self.threshold_ladder])
            self._ladder_steps = [
                (int(k), float(self.threshold_ladder[kept == k].min())) for k in np.unique(kept)
            ]
            scaled_v = vt.T / s  # column k: v_k / s_k (rows: time)
            # float32 working copies: the OI comparisons need no more
            self._project = np.ascontiguousarray(u[:n, :], dtype=np.float32)  # Uᵀ·[c; 0]
            self._scaled_v = np.ascontiguousarray(scaled_v.T, dtype=np.float32)  # (L, L): row k
            self._scaled_v_d2 = np.ascontiguousarray(
                np.diff(scaled_v, n=2, axis=0).T, dtype=np.float32
            )  # (L, L−2): second difference of row k
        else:
            self.threshold = float(defaults["threshold"] if threshold is None else threshold)
            if not 0 < self.threshold <= 1:
                raise ValueError(f"{method} threshold must be in (0, 1], got {self.threshold}")
            self.oscillation_index = None
            if self.tikhonov is None:
                gain = np.where(s >= self.threshold * s[0], 1.0 / s, 0.0)
            else:
                gain = s / (s**2 + (self.tikhonov * s[0]) ** 2)
            # pseudo-inverse restricted to the first T inputs (the rest is zero padding)
            self._pinv_t = ((u[:n, :] * gain) @ vt).astype(np.float32)  # (T, L): b = c @ pinv_t

    # ------------------------------------------------------------------ fitting

    def _prepare(self, conc) -> tuple[np.ndarray, tuple[int, ...]]:
        conc = np.asarray(conc)
        n_in = self.acquisition_times_s.size
        if conc.shape[-1:] != (n_in,):
            raise ValueError(f"curves have {conc.shape[-1:]} frames, the AIF has {n_in}")
        spatial = conc.shape[:-1]
        flat = conc.reshape(-1, n_in).astype(np.float32)  # a copy: the input is never modified
        np.nan_to_num(flat, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        if not self.uniform:
            flat = resample_curves(flat, self.acquisition_times_s, self.times_s).astype(np.float32)
        return flat, spatial

    def fit(self, conc, *, full: bool = False, return_threshold: bool = False):
        """Flow-scaled residue functions b(t) = (ρ/k_H)·F·R(t) (1/s) of tissue curves.

        ``conc`` is (..., T) on the same times as the AIF; any leading shape.
        Returns float32 (..., T) on :attr:`times_s`; with ``full=True`` the circulant methods
        return all 2T points (indices ≥ T hold the wrapped part: tissue earlier than the
        AIF). With ``return_threshold=True`` also returns the relative threshold used per
        voxel (an array (...) — constant for sSVD/cSVD, NaN with Tikhonov).
        """
        flat, spatial = self._prepare(conc)
        residue, used = self._fit_flat(flat)
        out_len = self.residue_length if full else self.n_frames
        residue = residue[:, :out_len].reshape(spatial + (out_len,))
        if return_threshold:
            return residue, used.reshape(spatial)
        return residue

    def _fit_flat(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, T) float32 curves on :attr:`times_s` → (n, L) float32 residues and (n,)
        thresholds, in parallel blocks."""
        if self.device == "cuda":
            return self._fit_torch(flat)
        n_vox = flat.shape[0]
        residue = np.empty((n_vox, self.residue_length), np.float32)
        used = np.empty(n_vox)
        block = _OSVD_BLOCK if self.method == "osvd" else _BLOCK_VOXELS

        def work(start, stop):
            residue[start:stop], used[start:stop] = self.fit_block(flat[start:stop])

        with single_threaded_blas():
            map_blocks(work, n_vox, block)
        return residue, used

    def fit_block(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One block (n, T) float32 on :attr:`times_s`, in the calling thread (no
        threading of its own; the caller limits BLAS): (n, L) residues, (n,) thresholds."""
        if self.method != "osvd":
            constant = np.nan if self.tikhonov is not None else self.threshold
            return block @ self._pinv_t, np.full(block.shape[0], constant)
        if block.shape[0] <= _OSVD_BLOCK:
            return self._fit_osvd(block)
        parts = [
            self._fit_osvd(block[start : start + _OSVD_BLOCK])
            for start in range(0, block.shape[0], _OSVD_BLOCK)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _fit_osvd(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-voxel oSVD on a block (n, T): nested pseudo-inverses along the ladder.

        Walks the ladder from its lowest threshold (all its components; one matrix product)
        up: each step removes the components between two cut-offs from the residue and its
        second difference. A voxel is done at the first step whose OI meets the target —
        the smallest passing threshold — and leaves the batch. Voxels that never pass end at
        the largest threshold (the fallback).
        """
        coefficients = block @ self._project  # (n, L): Uᵀ·c
        n_vox, length = coefficients.shape
        steps = self._ladder_steps
        kept_last = steps[-1][0]
        residue = coefficients[:, :kept_last] @ self._scaled_v[:kept_last]
        second = coefficients[:, :kept_last] @ self._scaled_v_d2[:kept_last]
        out = np.empty_like(residue)
        used = np.full(n_vox, self.threshold_ladder[0])
        active = np.arange(n_vox)
        limit = np.float32(self.oscillation_index * length)
        scratch = np.empty_like(second)
        for step in range(len(steps) - 1, -1, -1):
            kept, threshold = steps[step]
            if step < len(steps) - 1:
                drop = slice(kept, steps[step + 1][0])
                removed = coefficients[:, drop]
                residue -= removed @ self._scaled_v[drop]
                second -= removed @ self._scaled_v_d2[drop]
            f_max = residue.max(axis=1)
            roughness = np.abs(second, out=scratch).sum(axis=1)
            passes = (f_max > 0) & (roughness <= limit * f_max)
            if step == 0:
                passes[:] = True  # fallback: the largest threshold, fewest components
            if not passes.any():
                continue
            done = active[passes]
            out[done] = residue[passes]
            if step > 0:
                used[done] = threshold
            if passes.all():
                break
            keep = ~passes
            active = active[keep]
            residue, second = residue[keep], second[keep]
            coefficients = coefficients[keep]
            scratch = scratch[: active.size]
        return out, used

    # ------------------------------------------------------------------ torch (GPU)

    def _fit_torch(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same products on the GPU; oSVD evaluates every candidate for every voxel at
        once (a (block, K, L) tensor) and picks per voxel the smallest passing threshold."""
        import torch

        dev = torch.device("cuda")
        curves = torch.from_numpy(flat).to(dev)
        if self.method != "osvd":
            pinv = torch.from_numpy(self._pinv_t).to(dev)
            constant = np.nan if self.tikhonov is not None else self.threshold
            return (curves @ pinv).cpu().numpy(), np.full(flat.shape[0], constant)
        project = torch.from_numpy(self._project).to(dev)
        scaled_v = torch.from_numpy(self._scaled_v).to(dev)
        length = self.residue_length
        kept = torch.tensor([k for k, _ in self._ladder_steps], device=dev)  # increasing
        thresholds = np.array([p for _, p in self._ladder_steps])
        # mask[j, k]: candidate j keeps component k
        mask = (torch.arange(length, device=dev)[None, :] < kept[:, None]).float()
        residue = torch.empty((flat.shape[0], length), device=dev)
        used = np.empty(flat.shape[0])
        block = max(1, 2**26 // (mask.shape[0] * length))
        for start in range(0, flat.shape[0], block):
            coefficients = curves[start : start + block] @ project  # (n, L)
            candidates = (coefficients[:, None, :] * mask[None]) @ scaled_v  # (n, K, L)
            second = candidates[..., 2:] - 2 * candidates[..., 1:-1] + candidates[..., :-2]
            f_max = candidates.amax(dim=-1)
            passes = (f_max > 0) & (
                second.abs().sum(dim=-1) <= self.oscillation_index * length * f_max
            )
            passes[:, 0] = True  # fallback: the fewest components
            # the most components that pass = the smallest passing threshold
            choice = (length + 1) * passes.long() + torch.arange(passes.shape[1], device=dev)
            index = choice.argmax(dim=1)
            rows = torch.arange(index.shape[0], device=dev)
            residue[start : start + block] = candidates[rows, index]
            chosen = index.cpu().numpy()
            used[start : start + block] = np.where(
                chosen == 0, self.threshold_ladder[0], thresholds[chosen]
            )
        return residue.cpu().numpy(), used


def _resolve_device(device: str | None) -> str:
    if device in (None, "cpu"):
        return "cpu"
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda":
        if not cuda_available():
            raise RuntimeError("device='cuda' asked for, but torch sees no CUDA device")
        return "cuda"
    raise ValueError(f"unknown device {device!r}; choose cpu, cuda or auto")
