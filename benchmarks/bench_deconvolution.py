"""Deconvolution speed: voxels per second of sSVD, cSVD and oSVD on a brain-sized series.

Run: ``python benchmarks/bench_deconvolution.py [--shape 64 64 12] [--frames 60] [--repeat 3]``.
Prints one line per method: the set-up time (the SVD of the AIF matrix, once per subject),
the fit time for all voxels, voxels/s, and the time of the complete ``perfusion_maps`` call.
Not a test: figures depend on the machine and its BLAS threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bolus.config import PerfusionConstants
from bolus.perfusion.deconvolution import SVDDeconvolution
from bolus.perfusion.maps import perfusion_maps
from bolus.simulate import kinetics


def simulated_series(shape, n_frames, tr_s=1.5, seed=0):
    """Concentration curves (shape + (T,)) of random tissue, with noise, and the AIF."""
    rng = np.random.default_rng(seed)
    fine_dt = 0.1
    step = round(tr_s / fine_dt)
    fine = np.arange(n_frames * step) * fine_dt
    aif_fine = kinetics.arterial_input(fine)
    n = int(np.prod(shape))
    constants = PerfusionConstants.from_config(None)
    # a handful of distinct tissue types, tiled over the volume (the simulator is not timed)
    kinds = 256
    tissue = kinetics.tissue_concentration(
        fine,
        kinetics.local_aif(fine, aif_fine, rng.uniform(0, 4, kinds), rng.uniform(0, 2, kinds)),
        rng.uniform(10, 80, kinds),
        rng.uniform(2, 10, kinds),
        rng.choice([1.0, 2.0, 3.0], kinds),
        constants,
    )[:, ::step]
    conc = tissue[rng.integers(0, kinds, n)] + rng.normal(0, 0.01, (n, n_frames))
    times = np.arange(n_frames) * tr_s
    return conc.reshape(tuple(shape) + (n_frames,)), aif_fine[::step], times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 12])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    conc, aif, times = simulated_series(args.shape, args.frames)
    n_voxels = int(np.prod(args.shape))
    print(f"{n_voxels} voxels ({'x'.join(map(str, args.shape))}) x {args.frames} frames")
    print(f"{'method':8s} {'setup s':>8s} {'fit s':>8s} {'voxels/s':>12s} {'maps s':>8s}")
    for method in ("ssvd", "csvd", "osvd"):
        setup, fit, maps = [], [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            model = SVDDeconvolution(aif, times, method)
            setup.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.fit(conc)
            fit.append(time.perf_counter() - start)
            start = time.perf_counter()
            perfusion_maps(conc, times, aif, method)
            maps.append(time.perf_counter() - start)
        best_fit = min(fit)
        print(
            f"{method:8s} {min(setup):8.4f} {best_fit:8.3f} {n_voxels / best_fit:12,.0f} "
            f"{min(maps):8.3f}"
        )


if __name__ == "__main__":
    main()
