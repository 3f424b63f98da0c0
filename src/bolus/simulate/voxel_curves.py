"""Random voxel curves for pre-training voxel-wise models: one batch at a time, vectorised.

:func:`simulate_voxel_curves` draws ``n`` independent (tissue curve, global AIF) pairs with
their truth, each as its own acquisition (own AIF, temporal resolution and length), with the
conventions of :mod:`bolus.simulate.kinetics` (``C_t = (ρ/k_H)·F·(C_a,local ⊗ R)``):

================  ==============================================================
global AIF        50 % gamma-variate (arrival 4–20 s, α 2–4.5, β 0.8–2 s, a
                  recirculation bump 0–20 % of the peak 6–12 s later, a 0–4 %
                  steady tail), 50 % Parker 2006 (arrival 4–20 s, time scale
                  0.7–1.4); peak 1 (the scale cancels: models see curves divided by
                  the AIF peak)
delay δ           0–25 s (half the voxels 0–4 s, half 0–25 s; arrival + δ ≤ 55 s)
dispersion β      exponential transport function, 0–4 s (half 0–1.5 s)
residue           gamma family (:func:`~bolus.simulate.kinetics.residue_function`),
                  shape k 1–6; CBF 5–130 ml/100 g/min (log-uniform), MTT 2–16 s,
                  CBV = CBF·MTT/60 ≤ 15 ml/100 g
sampling          TR 0.8–2.5 s, duration 45–120 s (at least arrival + δ + 35 s)
noise             Gaussian on the concentration: tissue CNR (peak/σ) 4–60,
                  AIF CNR 30–300 (log-uniform), i.e. DSC at SNR ≈ 40–400 and CTP
================  ==============================================================

Curves are computed on a 0.25 s grid and sampled at the acquisition times ``k·TR``. The
returned acquisitions are padded to the longest one (``n_frames`` says how many frames
each has, ``time_s`` holds NaN beyond). The effective delay ``tmax_s`` = δ + argmax(h_β ⊗ R)
is the Tmax of the truth maps (what deconvolution with the global AIF measures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bolus.simulate.kinetics import (
    _fft_convolve,
    effective_residue_peak_time,
    exponential_kernel,
    gamma_variate,
    parker_aif,
    residue_function,
)

FINE_DT_S = 0.25
MAX_DURATION_S = 120.0


@dataclass(frozen=True)
class DrawRanges:
    """The ranges :func:`simulate_voxel_curves` draws from (s, ml/100 g/min, ml/100 g).

    The defaults are the table of the module docstring (the transformer's pre-training);
    :data:`ACROSS_PROTOCOLS` are the wider ones the shipped weights learn from. Delays are
    drawn half from ``delay_short_s``, half from ``delay_long_s``. With ``frames`` set, an
    acquisition has that many frames (log-uniform, at most :data:`MAX_DURATION_S` long,
    never shorter than arrival + δ + 35 s) instead of a duration from ``duration_s``.
    ``dsc_fraction`` of the acquisitions are DSC signal (S = S0·exp(−TE·ΔR2*), Rician noise
    of σ = S0/``snr``, ΔR2* of the AIF peak ``aif_peak_r2s``, converted back with the mean
    pre-arrival signal as S0); the others carry Gaussian noise on the concentration
    (``tissue_cnr``, ``aif_cnr``: CT perfusion and the default). ``aif_partial_volume``
    scales each measured AIF by a factor drawn from it (a partial-volume AIF): the maps the
    curves identify are then CBF and CBV divided by that factor, as for SVD.
    """

    arrival_s: tuple[float, float] = (4.0, 20.0)
    delay_short_s: tuple[float, float] = (0.0, 4.0)
    delay_long_s: tuple[float, float] = (0.0, 25.0)
    cbf: tuple[float, float] = (5.0, 130.0)
    mtt_s: tuple[float, float] = (2.0, 16.0)
    max_cbv: float = 15.0
    tr_s: tuple[float, float] = (0.8, 2.5)
    duration_s: tuple[float, float] = (45.0, MAX_DURATION_S)
    frames: tuple[int, int] | None = None
    tissue_cnr: tuple[float, float] = (4.0, 60.0)
    aif_cnr: tuple[float, float] = (30.0, 300.0)
    dsc_fraction: float = 0.0
    te_s: tuple[float, float] = (0.020, 0.050)
    snr: tuple[float, float] = (15.0, 200.0)
    aif_peak_r2s: tuple[float, float] = (20.0, 90.0)
    aif_voxels: tuple[int, int] = (4, 20)
    aif_partial_volume: tuple[float, float] | None = None


#: the shipped weights' draws (bolus.learn.pretrain): DSC and CT perfusion protocols of
#: sampling interval 0.5–2.5 s and 40–150 frames, TE 20–50 ms, SNR 15–200, AIF peak ΔR2*
#: 20–90 1/s, partial-volume AIF scaling 0.6–1, delays −2 … +10 s, CBF 2–120, MTT 1.5–20 s
ACROSS_PROTOCOLS = DrawRanges(
    arrival_s=(3.0, 25.0),
    delay_short_s=(-2.0, 3.0),
    delay_long_s=(-2.0, 10.0),
    cbf=(2.0, 120.0),
    mtt_s=(1.5, 20.0),
    max_cbv=20.0,
    tr_s=(0.5, 2.5),
    frames=(40, 150),
    tissue_cnr=(3.0, 60.0),
    dsc_fraction=0.7,
    aif_partial_volume=(0.6, 1.0),
)


@dataclass
class VoxelCurves:
    """A batch of simulated acquisitions of one voxel each (n rows, frames padded to F)."""

    time_s: np.ndarray  # (n, F) acquisition times, NaN beyond n_frames
    n_frames: np.ndarray  # (n,)
    tissue: np.ndarray  # (n, F) noisy tissue concentration (mM), 0 beyond n_frames
    aif: np.ndarray  # (n, F) noisy global AIF (mM, peak ≈ 1)
    fine_time_s: np.ndarray  # (Tf,) the 0.25 s simulation grid
    fine_aif: np.ndarray  # (n, Tf) noise-free global AIF
    fine_local_aif: np.ndarray  # (n, Tf) noise-free local AIF (delayed, dispersed)
    fine_tissue: np.ndarray  # (n, Tf) noise-free tissue concentration
    noise_sigma: np.ndarray  # (n, 2) σ of the tissue and the AIF noise
    cbf: np.ndarray  # (n,) ml/100 g/min
    cbv: np.ndarray  # (n,) ml/100 g
    mtt_s: np.ndarray  # (n,)
    shape: np.ndarray  # (n,) residue shape k
    delay_s: np.ndarray  # (n,) δ, arrival delay of the local AIF
    dispersion_s: np.ndarray  # (n,) β
    tmax_s: np.ndarray  # (n,) δ + argmax(h_β ⊗ R)
    ttp_s: np.ndarray  # (n,) time from the first frame to the noise-free tissue peak
    aif_scale: np.ndarray  # (n,) measured / true AIF (partial volume; 1: none)

    def sample_on(self, times_s, rng: np.random.Generator):
        """Noisy tissue and AIF and the noise-free local AIF at shared times ``times_s``
        (s from the start of the simulation, within 120 s): three (n, T) arrays."""
        pos = np.clip(np.asarray(times_s, float) / FINE_DT_S, 0, self.fine_time_s.size - 1.001)
        i0 = np.floor(pos).astype(int)
        w = pos - i0

        def at(curves):
            return curves[:, i0] * (1 - w) + curves[:, i0 + 1] * w

        shape = (self.cbf.size, pos.size)
        tissue = at(self.fine_tissue) + self.noise_sigma[:, :1] * rng.standard_normal(shape)
        aif = at(self.fine_aif) + self.noise_sigma[:, 1:] * rng.standard_normal(shape)
        return tissue, aif, at(self.fine_local_aif)

    def flow_residue(self, t_s, constants) -> np.ndarray:
        """(ρ/k_H)·F·R(t) in 1/s at times ``t_s`` (from the local AIF's arrival), (n, len(t))."""
        flow = self.cbf[:, None] / 6000.0 * constants.density_g_ml / constants.kh
        return flow * residue_function(np.asarray(t_s, float), self.mtt_s, self.shape)


def _loguniform(rng, low, high, n):
    return np.exp(rng.uniform(np.log(low), np.log(high), n))


def _shift(curves, delay_s, dt):
    """Delay each row by its own δ (s) with linear interpolation, zeros shifted in."""
    n, size = curves.shape
    pos = np.arange(size)[None, :] - delay_s[:, None] / dt
    i0 = np.floor(pos).astype(int)
    w = pos - i0
    rows = np.arange(n)[:, None]

    def take(idx):
        ok = (idx >= 0) & (idx < size)
        return np.where(ok, curves[rows, np.clip(idx, 0, size - 1)], 0.0)

    return take(i0) * (1 - w) + take(i0 + 1) * w


def simulate_voxel_curves(
    rng: np.random.Generator,
    n: int,
    constants,
    *,
    max_delay_s: float | None = 25.0,
    ranges: DrawRanges = DrawRanges(),
) -> VoxelCurves:
    """Draw ``n`` voxel acquisitions (see the module docstring and :class:`DrawRanges`);
    ``constants`` is a :class:`bolus.config.PerfusionConstants`; ``max_delay_s`` is the
    upper bound of the long delays (None: ``ranges.delay_long_s``')."""
    r = ranges
    t = np.arange(int(MAX_DURATION_S / FINE_DT_S) + 1) * FINE_DT_S
    col = (n, 1)
    arrival = rng.uniform(*r.arrival_s, n)
    # global AIF: gamma-variate with recirculation and tail, or Parker
    alpha, beta = rng.uniform(2.0, 4.5, n), rng.uniform(0.8, 2.0, n)
    gamma = gamma_variate(t, arrival.reshape(col), alpha.reshape(col), beta.reshape(col), 1.0)
    recirc = gamma_variate(
        t,
        (arrival + rng.uniform(6.0, 12.0, n)).reshape(col),
        alpha.reshape(col),
        (2.0 * beta).reshape(col),
        rng.uniform(0.0, 0.2, n).reshape(col),
    )
    end = (arrival + alpha * beta + 6.0).reshape(col)
    tail = rng.uniform(0.0, 0.04, n).reshape(col) / (1.0 + np.exp(-(t - end) / 2.0))
    gamma = gamma + recirc + tail
    parker = parker_aif(t, arrival.reshape(col), rng.uniform(0.7, 1.4, n).reshape(col))
    aif = np.where(rng.random(col) < 0.5, gamma, parker)
    aif /= aif.max(axis=1, keepdims=True)

    short = rng.random(n) < 0.5
    longest = r.delay_long_s[1] if max_delay_s is None else float(max_delay_s)
    delay = np.where(
        short,
        rng.uniform(r.delay_short_s[0], min(r.delay_short_s[1], longest), n),
        rng.uniform(r.delay_long_s[0], longest, n),
    )
    delay = np.minimum(delay, 55.0 - arrival)
    dispersion = np.where(rng.random(n) < 0.5, rng.uniform(0, 1.5, n), rng.uniform(0, 4.0, n))
    local = _fft_convolve(
        _shift(aif, delay, FINE_DT_S), exponential_kernel(t, dispersion), FINE_DT_S
    )

    cbf = _loguniform(rng, *r.cbf, n)
    mtt = rng.uniform(r.mtt_s[0], np.minimum(r.mtt_s[1], 60.0 * r.max_cbv / cbf), n)
    shape = rng.uniform(1.0, 6.0, n)
    flow = cbf[:, None] / 6000.0 * constants.density_g_ml / constants.kh
    residue = residue_function(t + FINE_DT_S / 2, mtt, shape)
    tissue = flow * _fft_convolve(local, residue, FINE_DT_S)
    window = t[t <= 1.5 * float(np.max(mtt + dispersion)) + 5.0]
    tmax = effective_residue_peak_time(window, mtt, shape, delay, dispersion)

    # acquisition: TR, duration, sampling, noise
    tr = rng.uniform(*r.tr_s, n)
    if r.frames is None:
        duration = rng.uniform(*r.duration_s, n)
    else:
        duration = (np.round(_loguniform(rng, r.frames[0], r.frames[1] + 0.5, n)) - 1) * tr
    duration = np.clip(np.maximum(duration, arrival + delay + 35.0), 0, t[-1])
    n_frames = np.floor(duration / tr).astype(int) + 1
    frames = n_frames.max()
    times = np.arange(frames)[None, :] * tr[:, None]
    valid = np.arange(frames)[None, :] < n_frames[:, None]
    pos = np.clip(times / FINE_DT_S, 0, t.size - 1.001)
    i0 = np.floor(pos).astype(int)
    w = pos - i0
    rows = np.arange(n)[:, None]

    def sample(curves):
        return np.where(valid, curves[rows, i0] * (1 - w) + curves[rows, i0 + 1] * w, 0.0)

    tissue_cnr = _loguniform(rng, *r.tissue_cnr, n)
    aif_cnr = _loguniform(rng, *r.aif_cnr, n)
    sigma_t = tissue.max(axis=1) / tissue_cnr
    noisy_tissue = sample(tissue) + valid * sigma_t[:, None] * rng.standard_normal((n, frames))
    noisy_aif = sample(aif) + valid * (1.0 / aif_cnr)[:, None] * rng.standard_normal((n, frames))
    sigma = np.column_stack([sigma_t, 1.0 / aif_cnr])
    if r.dsc_fraction > 0:
        dsc = rng.random(n) < r.dsc_fraction
        tissue_dsc, aif_dsc, sigma_dsc = _dsc_signal(
            rng, sample(tissue), sample(aif), valid, times < arrival[:, None] - 1.0, r
        )
        noisy_tissue = np.where(dsc[:, None], tissue_dsc, noisy_tissue)
        noisy_aif = np.where(dsc[:, None], aif_dsc, noisy_aif)
        sigma = np.where(dsc[:, None], sigma_dsc, sigma)
    scale = np.ones(n)
    if r.aif_partial_volume is not None:
        scale = rng.uniform(*r.aif_partial_volume, n)
        noisy_aif = noisy_aif * scale[:, None]
    ttp = t[np.argmax(tissue, axis=1)]
    return VoxelCurves(
        time_s=np.where(valid, times, np.nan),
        n_frames=n_frames,
        tissue=noisy_tissue,
        aif=noisy_aif,
        fine_time_s=t,
        fine_aif=aif,
        fine_local_aif=local,
        fine_tissue=tissue,
        noise_sigma=sigma,
        cbf=cbf,
        cbv=cbf * mtt / 60.0,
        mtt_s=mtt,
        shape=shape,
        delay_s=delay,
        dispersion_s=dispersion,
        tmax_s=tmax,
        ttp_s=ttp,
        aif_scale=scale,
    )


def _dsc_signal(rng, tissue, aif, valid, baseline, r: DrawRanges):
    """DSC acquisitions of noise-free (n, F) tissue and AIF concentrations (AIF peak 1):
    S = exp(−TE·ΔR2*) with ΔR2* = peak·C, Rician noise σ = 1/SNR (the AIF the mean of
    ``aif_voxels`` voxels), back to ΔR2*/peak with the mean ``baseline`` signal as S0.
    Returns the noisy tissue and AIF (n, F) and their effective σ (n, 2), in AIF-peak units."""
    n, frames = tissue.shape
    te = rng.uniform(*r.te_s, n)[:, None]
    peak = rng.uniform(*r.aif_peak_r2s, n)[:, None]
    snr = _loguniform(rng, *r.snr, n)[:, None]
    n_aif = rng.integers(r.aif_voxels[0], r.aif_voxels[1] + 1, n)[:, None]
    baseline = baseline & valid
    baseline[:, :2] = True  # at least two frames

    def acquire(conc, sigma):
        signal = np.exp(-te * peak * conc)
        noisy = np.hypot(
            signal + sigma * rng.standard_normal((n, frames)),
            sigma * rng.standard_normal((n, frames)),
        )
        s0 = (noisy * baseline).sum(axis=1, keepdims=True) / baseline.sum(axis=1, keepdims=True)
        out = -np.log(np.maximum(noisy, 1e-3) / s0) / (te * peak)
        return np.where(valid, out, 0.0)

    sigma_t, sigma_a = 1.0 / snr, 1.0 / (snr * np.sqrt(n_aif))
    return (
        acquire(tissue, sigma_t),
        acquire(aif, sigma_a),
        np.column_stack([(sigma_t / (te * peak))[:, 0], (sigma_a / (te * peak))[:, 0]]),
    )


def simulate_on_grid(
    rng: np.random.Generator,
    n: int,
    grid_s,
    constants,
    *,
    max_delay_s: float | None = 25.0,
    ranges: DrawRanges = DrawRanges(),
    curve_scale: float = 1.0,
    aif_scale: float = 1.0,
    chunk: int = 1024,
) -> dict[str, np.ndarray]:
    """``n`` voxels of :func:`simulate_voxel_curves` (each its own acquisition: TR, length,
    noise) as a model sees a subject: the noisy tissue curve and global AIF interpolated
    linearly onto ``grid_s`` (s from the first frame), holding the end values beyond the
    acquisition, and divided by the area of the acquired global AIF within the grid's span,
    as :func:`bolus.learn.datasets.model_inputs` does. Returns float32 ``curves`` (tissue ×
    ``curve_scale``/area), ``aif`` and ``local_aif`` (noise-free, at the grid times; ×
    ``aif_scale``/area), all (n, T), ``bad`` (n,) the effective delay ``tmax_s`` (s), and
    the maps the curves identify, (n,) each: ``cbf``, ``cbv`` (divided by the AIF's
    partial-volume scale, as SVD measures them), ``mtt``, ``tmax``, ``ttp``."""
    grid = np.asarray(grid_s, float) - float(np.asarray(grid_s, float)[0])
    names = ("curves", "aif", "local_aif", "bad", "cbf", "cbv", "mtt", "tmax", "ttp")
    parts: dict[str, list] = {k: [] for k in names}
    for start in range(0, int(n), chunk):
        sim = simulate_voxel_curves(
            rng, min(chunk, int(n) - start), constants, max_delay_s=max_delay_s, ranges=ranges
        )
        m = sim.cbf.size
        rows = np.arange(m)[:, None]
        tr = sim.time_s[:, 1:2]  # frames at k·TR
        last = (sim.n_frames - 1)[:, None]
        pos = np.clip(grid[None, :] / tr, 0, last)
        i0 = np.minimum(np.floor(pos).astype(int), last - 1)
        w = pos - i0

        def on_grid(curves, rows=rows, i0=i0, w=w):
            return curves[rows, i0] * (1 - w) + curves[rows, i0 + 1] * w

        # trapezoid over the acquired frames within the grid's span (the arrays hold 0
        # beyond the acquisition)
        within = np.minimum(last[:, 0], np.floor(grid[-1] / tr[:, 0] + 1e-6).astype(int))
        inside = np.arange(sim.aif.shape[1])[None, :] <= within[:, None]
        ends = sim.aif[:, 0] + sim.aif[rows[:, 0], within]
        area = (tr[:, 0] * ((sim.aif * inside).sum(axis=1) - 0.5 * ends))[:, None]
        local_pos = np.clip(grid / FINE_DT_S, 0, sim.fine_time_s.size - 1.001)
        j0 = np.floor(local_pos).astype(int)
        v = local_pos - j0
        local = sim.fine_local_aif[:, j0] * (1 - v) + sim.fine_local_aif[:, j0 + 1] * v
        parts["curves"].append(on_grid(sim.tissue) * curve_scale / area)
        parts["aif"].append(on_grid(sim.aif) * aif_scale / area)
        parts["local_aif"].append(local * sim.aif_scale[:, None] * aif_scale / area)
        parts["bad"].append(sim.tmax_s)
        parts["cbf"].append(sim.cbf / sim.aif_scale)
        parts["cbv"].append(sim.cbv / sim.aif_scale)
        parts["mtt"].append(sim.mtt_s)
        parts["tmax"].append(sim.tmax_s)
        parts["ttp"].append(sim.ttp_s)
    return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}
