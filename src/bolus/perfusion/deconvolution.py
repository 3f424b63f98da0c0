"""Deconvolution of tissue curves by the AIF with truncated SVD: sSVD, cSVD, oSVD.

The indicator-dilution model: ``C_t(t) = (ρ/k_H) · F · (C_a ⊗ R)(t)``. On a uniform grid
of step Δt the convolution is a matrix product ``c = A · b`` with
``b[k] = (ρ/k_H)·F·R(k·Δt)`` (1/s) and, following Østergaard 1996, the simple (rectangle)
weighting

    A[i, j] = Δt · C_a(t_{i−j})        (i ≥ j, else 0)

— the AIF sample times the frame length, no interpolation between samples. Each b[k]
then stands for the mean of the residue over the frame centred on k·Δt; for k = 0 half of
that frame lies before t = 0, so a residue with a cusp at 0 (undispersed, e.g.
exponential) gets b[0] ≈ b(0)/2: part of the known CBF underestimation, and a Tmax bias
of up to one frame for such residues. Alternatives measured on the simulator's curves and
rejected: the linear ("volume") weighting of Sourbron 2007 changes CBF by 1–8 % either
way, for a less simple matrix; the trapezoid weighting (lag-0 column halved) breaks the
circulant structure — cSVD CBF then varied 0.59–0.72 of truth with the delay instead of
0.59–0.61 — and made oSVD overshoot (1.2–1.3 of truth).

:meth:`SVDDeconvolution.fit` returns b, "F·R" in the units of the area ratio (1/s); the
factor ρ/k_H is removed by :mod:`bolus.perfusion.maps` through
``PerfusionConstants.cbf_scale`` (CBF = cbf_scale · max b).

Methods
-------
``ssvd``  lower-triangular Toeplitz A (T×T); singular values below ``threshold · s_max`` are
          dropped (Østergaard 1996; default threshold 0.2). Assumes the tissue cannot see the
          bolus before the AIF: sensitive to the AIF-tissue delay.
``csvd``  block-circulant A (2T×2T, AIF and tissue zero-padded to 2T; Wu 2003): the circular
          convolution makes the result shift-invariant, so delays of either sign only
          rotate the residue; relative threshold (default 0.1).
``osvd``  block-circulant A with a threshold chosen per voxel: the smallest one on a ladder
          whose residue has an oscillation index

              OI = 1/(L · f_max) · Σ_{k=2}^{L−1} |f[k] − 2 f[k−1] + f[k−2]|

          at most the target (default 0.095; L = 2T, f the residue; Wu 2003); voxels that
          never meet it get the largest threshold on the ladder.

Defaults come from the config schema (``bolus.config.schema_defaults()['svd']``).

Speed: one SVD per AIF (the model object), then one matrix product for all voxels. For
oSVD the truncated pseudo-inverse at ladder threshold p_k is V_k·S_k⁻¹·U_kᵀ with the
components whose singular value is ≥ p_k·s_max, so the pseudo-inverses of the ladder are
nested: the tissue curves are projected once onto Uᵀ (one matmul), the residue with every
component of the smallest threshold is one more matmul, and each step up the ladder
subtracts the components between two cut-offs (one small matmul over those components,
for the voxels that have not yet met the target). The result is identical to applying K
separately built pseudo-inverses and choosing per voxel, at a fraction of the cost.

Non-uniform time vectors (jitter of real acquisitions) are resampled, AIF and tissue
alike, by linear interpolation onto the uniform grid ``t_0 + k·Δt`` with Δt the median
frame interval; :attr:`SVDDeconvolution.times_s` is the grid the residue lives on. A
uniform vector (all intervals within 0.1 % of the median) is used as is, no interpolation.
"""

from __future__ import annotations

import numpy as np

from bolus.config import schema_defaults

METHODS = ("ssvd", "csvd", "osvd")

# Relative frame-interval jitter below which the time vector counts as uniform.
UNIFORM_TOLERANCE = 1e-3

# oSVD threshold ladder (relative to the largest singular value), descending from the
# largest: 0.5 … 0.01 in steps of 0.01 plus finer steps to 0.001 (Wu 2003 searched in
# steps of a few percent). Duplicates (same set of kept singular values) cost nothing.
OSVD_LADDER = np.concatenate([np.arange(0.50, 0.0099, -0.01), [0.007, 0.005, 0.003, 0.002, 0.001]])

# voxels per block of the matrix products: small enough for the oSVD working arrays
# (block · 2T · 8 bytes each) to stay in cache, large enough for BLAS to be efficient
_BLOCK_VOXELS = 4096


def is_uniform(times_s, tolerance: float = UNIFORM_TOLERANCE) -> bool:
    """True when every frame interval is within ``tolerance`` (relative) of the median."""
    steps = np.diff(np.asarray(times_s, dtype=float))
    median = np.median(steps)
    return bool(np.all(np.abs(steps - median) <= tolerance * median))


def uniform_grid(times_s) -> np.ndarray:
    """The uniform grid ``t_0 + k·Δt`` (Δt = median interval) covering ``times_s``."""
    times = np.asarray(times_s, dtype=float)
    dt = float(np.median(np.diff(times)))
    n = int(np.floor((times[-1] - times[0]) / dt + 1e-6)) + 1
    return times[0] + dt * np.arange(n)


def resample_curves(curves, times_s, grid_s):
    """Linear interpolation of (..., T) curves sampled at ``times_s`` onto ``grid_s``.

    Vectorised over the leading axes: the bracketing frames and weights are computed once
    for the grid and applied to every curve.
    """
    times = np.asarray(times_s, dtype=float)
    grid = np.asarray(grid_s, dtype=float)
    right = np.clip(np.searchsorted(times, grid, side="right"), 1, times.size - 1)
    left = right - 1
    weight = np.clip((grid - times[left]) / (times[right] - times[left]), 0.0, 1.0)
    curves = np.asarray(curves)
    return curves[..., left] * (1.0 - weight) + curves[..., right] * weight


def convolution_matrix(aif, dt_s: float) -> np.ndarray:
    """Lower-triangular Toeplitz matrix of the causal convolution, ``A[i, j] = Δt·C_a[i−j]``."""
    aif = np.asarray(aif, dtype=float)
    n = aif.size
    lag = np.arange(n)[:, None] - np.arange(n)[None, :]
    return np.where(lag >= 0, dt_s * aif[np.clip(lag, 0, None)], 0.0)


def block_circulant_matrix(aif, dt_s: float) -> np.ndarray:
    """Block-circulant matrix (2T×2T) of the AIF zero-padded to 2T (Wu 2003),
    ``D[i, j] = Δt·C_a[(i − j) mod 2T]``."""
    aif = np.asarray(aif, dtype=float)
    padded = np.concatenate([aif, np.zeros_like(aif)])
    size = padded.size
    lag = (np.arange(size)[:, None] - np.arange(size)[None, :]) % size
    return dt_s * padded[lag]


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

    Attributes
    ----------
    times_s : the uniform grid (s) that curves are deconvolved on (the input if uniform).
    dt_s : its step.
    residue_length : T for sSVD, 2T for the circulant methods (T = len(times_s)).
    singular_values : of the convolution matrix, descending.
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

        defaults = schema_defaults()["svd"]
        self.method = method
        self.acquisition_times_s = times
        self.uniform = is_uniform(times)
        self.times_s = times if self.uniform else uniform_grid(times)
        self.dt_s = float(np.median(np.diff(self.times_s)))
        self.aif = aif if self.uniform else resample_curves(aif, times, self.times_s)
        n = self.times_s.size
        self.n_frames = n

        if method == "ssvd":
            matrix = convolution_matrix(self.aif, self.dt_s)
        else:
            matrix = block_circulant_matrix(self.aif, self.dt_s)
        self.residue_length = matrix.shape[0]
        u, s, vt = np.linalg.svd(matrix)
        self.singular_values = s

        if method == "osvd":
            self.threshold = None
            self.oscillation_index = float(
                defaults["osvd_oscillation_index"]
                if oscillation_index is None
                else oscillation_index
            )
            ladder = OSVD_LADDER if threshold_ladder is None else threshold_ladder
            self.threshold_ladder = np.unique(np.round(np.asarray(ladder, dtype=float), 6))[::-1]
            if self.threshold_ladder.size == 0 or np.any(self.threshold_ladder <= 0):
                raise ValueError("oSVD threshold ladder must hold positive thresholds")
            # (number of kept components, smallest ladder threshold keeping exactly those),
            # by increasing number: thresholds that keep the same components are one step
            kept = np.array([int(np.sum(s >= p * s[0])) for p in self.threshold_ladder])
            self._ladder_steps = [
                (int(k), float(self.threshold_ladder[kept == k].min())) for k in np.unique(kept)
            ]
            self._project = u[:n, :]  # padded tissue → Uᵀ·[c; 0] = (U[:T])ᵀ·c
            self._scaled_v = vt.T / s  # column k: v_k / s_k (rows: time)
            self._scaled_v_d2 = np.diff(self._scaled_v, n=2, axis=0)  # its second difference
        else:
            key = "ssvd_threshold" if method == "ssvd" else "csvd_threshold"
            self.threshold = float(defaults[key] if threshold is None else threshold)
            if not 0 < self.threshold <= 1:
                raise ValueError(f"{method} threshold must be in (0, 1], got {self.threshold}")
            self.oscillation_index = None
            keep = s >= self.threshold * s[0]
            # pseudo-inverse restricted to the first T inputs (the rest is zero padding)
            self._pinv_t = (u[:n, keep] / s[keep]) @ vt[keep]  # (T, L): b = c @ pinv_t

    # ------------------------------------------------------------------ fitting

    def _prepare(self, conc) -> tuple[np.ndarray, tuple[int, ...]]:
        conc = np.asarray(conc)
        n_in = self.acquisition_times_s.size
        if conc.shape[-1:] != (n_in,):
            raise ValueError(f"curves have {conc.shape[-1:]} frames, the AIF has {n_in}")
        spatial = conc.shape[:-1]
        flat = np.nan_to_num(conc.reshape(-1, n_in).astype(float), nan=0.0, posinf=0.0, neginf=0.0)
        if not self.uniform:
            flat = resample_curves(flat, self.acquisition_times_s, self.times_s)
        return flat, spatial

    def fit(self, conc, *, full: bool = False, return_threshold: bool = False):
        """Flow-scaled residue functions b(t) = (ρ/k_H)·F·R(t) (1/s) of tissue curves.

        ``conc`` is (..., T) on the same times as the AIF; any leading shape.
        Returns (..., T) on :attr:`times_s`; with ``full=True`` the circulant methods return
        all 2T points (indices ≥ T hold the wrapped part: tissue earlier than the AIF).
        With ``return_threshold=True`` also returns the relative threshold used per voxel
        (an array (...) — constant for sSVD/cSVD).
        """
        flat, spatial = self._prepare(conc)
        n_vox = flat.shape[0]
        out_len = self.residue_length if full else self.n_frames
        residue = np.empty((n_vox, out_len))
        used = np.empty(n_vox)
        for start in range(0, n_vox, _BLOCK_VOXELS):
            block = flat[start : start + _BLOCK_VOXELS]
            if self.method == "osvd":
                res, thr = self._fit_osvd(block)
            else:
                res, thr = block @ self._pinv_t, self.threshold
            residue[start : start + block.shape[0]] = res[:, :out_len]
            used[start : start + block.shape[0]] = thr
        residue = residue.reshape(spatial + (out_len,))
        if return_threshold:
            return residue, used.reshape(spatial)
        return residue

    def _fit_osvd(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-voxel oSVD on a block (n, T): nested pseudo-inverses along the ladder.

        The ladder is walked from its smallest threshold (all kept components; one matmul)
        up: each step removes the components between two cut-offs from the residue and its
        second difference (one small matmul). A voxel is done at the first step whose OI
        meets the target — the smallest passing threshold — and leaves the active set, so
        the work shrinks as voxels settle. Voxels that never pass end at the largest
        threshold, the fallback.
        """
        coefficients = block @ self._project  # (n, L): Uᵀ·c
        n_vox, length = coefficients.shape
        kept_last = self._ladder_steps[-1][0]
        residue = coefficients[:, :kept_last] @ self._scaled_v[:, :kept_last].T
        second_difference = np.diff(residue, n=2, axis=1)
        out = np.empty_like(residue)
        used = np.full(n_vox, self.threshold_ladder[0])
        active = np.arange(n_vox)
        for step in range(len(self._ladder_steps) - 1, -1, -1):
            kept, threshold = self._ladder_steps[step]
            if step < len(self._ladder_steps) - 1:
                drop = slice(kept, self._ladder_steps[step + 1][0])
                removed = coefficients[active, drop]
                residue -= removed @ self._scaled_v[:, drop].T
                second_difference -= removed @ self._scaled_v_d2[:, drop].T
            f_max = residue.max(axis=1)
            roughness = np.abs(second_difference).sum(axis=1)
            passes = (f_max > 0) & (roughness <= self.oscillation_index * length * f_max)
            if step == 0:
                passes[:] = True  # fallback: the largest threshold, fewest components
            done = active[passes]
            out[done] = residue[passes]
            if step > 0:
                used[done] = threshold
            keep = ~passes
            active, residue, second_difference = (
                active[keep],
                residue[keep],
                second_difference[keep],
            )
            if active.size == 0:
                break
        return out, used
