"""What one DSC voxel can tell of its CBF: the single-voxel bound on CBF r at an acquisition.

    python benchmarks/bench_cbf_bound.py [--seed 777] [--subjects 6] [--snr 30 50 100]
                                         [--reach 3] [--width 1]

Simulates, in memory, the subjects of ``bench_pretrained.py``'s cohort (the same seed,
numbers and pathologies, and its acquisition: TR 1.6 s, 50 frames, arterial peak ΔR2*
55–65 1/s) at each ``--snr``, and reads every brain voxel's CBF from its noisy signal
knowing the shape of its noise-free ΔR2* curve g(t) (AIF, residue, delay, dispersion), so
that only the curve's scale a is unknown (CBF, and CBV by the same factor). Readings:

* ``S0 from the baseline``: ΔR2* converted as the pipeline does
  (:func:`bolus.perfusion.concentration.concentration_from_signal`: S0 the mean of the
  automatic baseline frames), then a = <ΔR2*, g> / <g, g>;
* ``S0 fitted``: ln S(t) = ln S0 − TE·a·g(t), S0 and a fitted together by least squares
  weighted by S² (the variance of ln S is σ²/S²): once the curve's shape is known, every
  frame tells S0, not the baseline's alone. A voxel's signal leaves just these two
  unknowns, so with the posterior mean (below) this row is the single-voxel bound;
* ``S0 true``: ΔR2* from the noise-free baseline, which no estimator has;
* ``S0 fitted, pooled``: the ``S0 fitted`` estimates of CBF (CBV) averaged over the brain
  voxels of the in-plane (2·``--reach`` + 1)² neighbourhood, each weighted by how alike
  its baseline image is, exp(−d²/2) with d = ΔS0 / (√2·σ0·``--width``) and σ0 the
  baseline mean's noise sd (σ/√frames): the baseline image's tissue contrast (grey 1500,
  white 1150, CSF 2400 a.u. in the simulator) as the guide to which neighbours share a
  voxel's flow. The defaults were the best of reaches 1–6 and widths 0.7–4 at SNR 30,
  seed 777 (CBF r 0.94; reach 1: 0.93, 6: 0.93): one way neighbours can take an
  estimator above the bound, not a bound itself.

Each scale times the truth is an estimate of CBF (CBV). Columns: Pearson r with the truth
of that estimate (``least squares``) and of the posterior mean E[truth | estimate] over
the cohort's own voxels (``posterior mean``: 60 quantile bins, fitted on the voxels it
scores, so optimistic). The conditional mean is the function of an estimate that
correlates best with the truth. Pooled over the truth's brain voxels of every subject.
The learned models' figures on the same subjects are ``bench_pretrained.py``'s
(``--snr``).

Prints one markdown table (figures, not a timed test).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_pretrained import ACQUISITION, PATHOLOGIES  # noqa: E402

BINS = 60


def posterior_mean(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """E[truth | estimate] per voxel, from ``BINS`` quantile bins of ``estimate``."""
    edges = np.quantile(estimate, np.linspace(0.0, 1.0, BINS + 1))
    bins = np.clip(np.searchsorted(edges, estimate, side="right") - 1, 0, BINS - 1)
    counts = np.bincount(bins, minlength=BINS)
    return (np.bincount(bins, truth, BINS) / np.maximum(counts, 1))[bins]


def scales(sim) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, float]:
    """(brain mask, {reading: the scale a of every brain voxel's curve}, the baseline
    image S0, the noise sd of a difference of two of its voxels); see the docstring."""
    from bolus.perfusion.concentration import baseline_frames, concentration_from_signal

    brain = sim.truth["brain"] > 0
    shape = sim.delta_r2s[brain].astype(float)  # g(t): the noise-free ΔR2*, a = 1
    norm = np.maximum((shape * shape).sum(-1), 1e-12)
    signal = sim.signal.astype(float)
    frames = baseline_frames(signal[brain].mean(0), sim.time_s)  # as the pipeline finds them
    conc, s0_image = concentration_from_signal(signal, sim.te_s, sim.time_s, brain, frames)
    n_frames = np.arange(signal.shape[-1])[frames].size
    s0 = sim.signal_noise_free[..., 0][brain][:, None]
    measured = np.maximum(signal[brain], 1e-3 * s0)  # S ≤ 0 (noise) read as the pipeline does
    true_s0 = -np.log(measured / s0) / sim.te_s
    # weighted least squares of ln S on [1, −TE·g]: the slope is a
    w, x, y = measured**2, -sim.te_s * shape, np.log(measured)
    sw, sx, sy = w.sum(-1), (w * x).sum(-1), (w * y).sum(-1)
    sxx, sxy = (w * x * x).sum(-1), (w * x * y).sum(-1)
    fitted = (sw * sxy - sx * sy) / np.maximum(sw * sxx - sx * sx, 1e-12)
    readings = {
        "S0 from the baseline": (conc[brain] * shape).sum(-1) / norm,
        "S0 fitted": fitted,
        "S0 true": (true_s0 * shape).sum(-1) / norm,
    }
    return brain, readings, s0_image, np.sqrt(2.0 / n_frames) * sim.noise_sigma


def pooled_by_baseline(brain, values, s0, spread, reach: int, width: float) -> np.ndarray:
    """``values`` (estimates, of the ``brain`` voxels) averaged over the in-plane brain
    neighbours within ``reach``, weighted by the likeness of their baseline image ``s0``
    (``spread``: the noise sd of a difference; module docstring)."""
    value = np.zeros(brain.shape)
    value[brain] = values
    total, weight = np.zeros(brain.shape), np.zeros(brain.shape)
    for dx in range(-reach, reach + 1):
        for dy in range(-reach, reach + 1):  # the brain lies well inside the image: no wrap
            d = (s0 - np.roll(s0, (dx, dy), (0, 1))) / (spread * width)
            w = np.exp(-0.5 * d * d) * np.roll(brain, (dx, dy), (0, 1))
            total += w * np.roll(value, (dx, dy), (0, 1))
            weight += w
    return total[brain] / weight[brain]  # ≥ the voxel's own weight, 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--snr", type=float, nargs="+", default=[30.0, 50.0, 100.0])
    ap.add_argument("--reach", type=int, default=3, help="pooled reading: voxels each side")
    ap.add_argument("--width", type=float, default=1.0, help="pooled reading: weight width")
    args = ap.parse_args()
    if args.reach < 1 or not args.width > 0:
        ap.error("--reach must be ≥ 1 voxel and --width > 0")

    from bolus.simulate.cohort import simulate_subject

    acquisition = {k: v for k, v in ACQUISITION.items() if k != "snr"}
    print(f"seed {args.seed}, {args.subjects} subjects, {acquisition}")
    print("| SNR | reading | CBF r, least squares | CBF r, posterior mean | CBV r, least squares "
          "| CBV r, posterior mean |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for snr in args.snr:
        truth = {"cbf": [], "cbv": []}
        estimates: dict[tuple[str, str], list] = {}  # (reading, map): per subject
        for n in range(1, args.subjects + 1):
            pathology = PATHOLOGIES[(n - 1) % len(PATHOLOGIES)]
            sim = simulate_subject(args.seed, n, pathology, snr=snr, **acquisition)
            brain, found, s0, spread = scales(sim)
            for m in truth:
                truth[m].append(sim.truth[m][brain])
                for name, scale in found.items():
                    estimates.setdefault((name, m), []).append(scale * truth[m][-1])
                fitted = estimates[("S0 fitted", m)][-1]
                pooled = pooled_by_baseline(brain, fitted, s0, spread, args.reach, args.width)
                estimates.setdefault(("S0 fitted, pooled", m), []).append(pooled)
        truth = {k: np.concatenate(v) for k, v in truth.items()}
        for name in dict.fromkeys(reading for reading, _ in estimates):
            cells = []
            for m in ("cbf", "cbv"):
                estimate = np.concatenate(estimates[(name, m)])
                cells += [np.corrcoef(estimate, truth[m])[0, 1],
                          np.corrcoef(posterior_mean(estimate, truth[m]), truth[m])[0, 1]]  # fmt: skip
            print(f"| {snr:g} | {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
