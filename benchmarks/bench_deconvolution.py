"""Deconvolution speed and memory: sSVD, cSVD and oSVD maps of one brain-sized subject.

    python benchmarks/bench_deconvolution.py [--shape 128 128 20] [--frames 60] [--threads 2]
                                             [--repeat 5] [--device cpu|cuda]

Builds a 128×128×20×60 float32 concentration series (simulated tissue curves of random CBF,
MTT, residue shape, delay and dispersion, with noise) and an ellipsoidal brain mask of
about 40 % of the volume, then times the complete :func:`perfusion_maps` call (brain voxels
only: model set-up, deconvolution, CBF, CBV, MTT, Tmax, TTP) of every method, ``--repeat``
times. Prints per method the best and the median wall time, the best time per 10,000
voxels, the CPU time (all threads; on a shared machine wall time depends on the load, CPU
time much less), and the peak memory the maps allocate (tracemalloc, untimed pass), then
the sums over the three methods and the load average. BLAS and OpenMP
are limited to ``--threads`` before numpy is imported. Not a test: figures depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 128, 20])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--tr", type=float, default=1.5, help="repetition time (s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return parser.parse_args(argv)


def simulated_subject(shape, n_frames, tr_s, seed=0):
    """(conc (shape + (T,)) float32, brain mask, AIF (T,), times (T,))."""
    import numpy as np

    from bolus.config import PerfusionConstants
    from bolus.simulate import kinetics

    rng = np.random.default_rng(seed)
    fine_dt = 0.1
    step = round(tr_s / fine_dt)
    fine = np.arange(n_frames * step) * fine_dt
    aif_fine = kinetics.arterial_input(fine)
    axes = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    brain = (x / 0.8) ** 2 + (y / 0.95) ** 2 + z**2 <= 1.0
    n_brain = int(brain.sum())
    # 512 distinct tissues tiled over the brain (the simulator is not what is timed)
    kinds = 512
    tissue = kinetics.tissue_concentration(
        fine,
        kinetics.local_aif(fine, aif_fine, rng.uniform(0, 4, kinds), rng.uniform(0, 2, kinds)),
        rng.uniform(10, 80, kinds),
        rng.uniform(2, 10, kinds),
        rng.choice([1.0, 2.0, 3.0], kinds),
        PerfusionConstants.from_config(None),
    )[:, ::step]
    conc = np.zeros(tuple(shape) + (n_frames,), np.float32)
    conc[brain] = tissue[rng.integers(0, kinds, n_brain)] + rng.normal(0, 0.01, (n_brain, 1))
    conc[brain] += rng.normal(0, 0.01, (n_brain, n_frames)).astype(np.float32)
    times = np.arange(n_frames) * tr_s
    return conc, brain, aif_fine[::step], times


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def main(argv=None):
    args = parse(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if "numpy" in sys.modules:
        print("warning: numpy was imported before the thread limits were set", file=sys.stderr)
    import numpy as np

    from bolus.perfusion.maps import perfusion_maps

    conc, brain, aif, times = simulated_subject(args.shape, args.frames, args.tr)
    n_voxels = int(brain.sum())
    print(
        f"{'x'.join(map(str, args.shape))} x {args.frames} frames, {n_voxels} brain voxels "
        f"({n_voxels / brain.size:.0%}), {args.threads} threads, device {args.device}"
    )
    print(
        f"input series {conc.nbytes / 2**20:.0f} MiB; RSS before the maps {peak_rss_mb():.0f} MiB"
    )
    device = None if args.device == "cpu" else args.device
    perfusion_maps(conc[:2, :2, :2], times, aif, "osvd", device=device)  # warm-up (imports)
    methods = ("ssvd", "csvd", "osvd")
    walls = {m: [] for m in methods}
    cpus = {m: [] for m in methods}
    for _ in range(args.repeat):
        for method in methods:
            start, start_cpu = time.perf_counter(), time.process_time()
            perfusion_maps(conc, times, aif, method, mask=brain, device=device)
            walls[method].append(time.perf_counter() - start)
            cpus[method].append(time.process_time() - start_cpu)
    # memory: one more pass under tracemalloc (numpy reports its buffers to it), untimed
    peaks = {}
    for method in methods:
        tracemalloc.start()
        perfusion_maps(conc, times, aif, method, mask=brain, device=device)
        peaks[method] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    header = f"{'method':8s} {'best s':>8s} {'median s':>9s} {'s/10k vox':>10s}"
    print(header + f" {'CPU s':>7s} {'peak MiB':>9s}")
    for method in methods:
        best, median = min(walls[method]), float(np.median(walls[method]))
        print(
            f"{method:8s} {best:8.3f} {median:9.3f} {best / n_voxels * 1e4:10.4f} "
            f"{min(cpus[method]):7.3f} {peaks[method]:9.0f}"
        )
    totals = np.sum([walls[m] for m in methods], axis=0)
    best, median = float(totals.min()), float(np.median(totals))
    cpu = sum(min(cpus[m]) for m in methods)
    print(f"{'all 3':8s} {best:8.3f} {median:9.3f} {best / n_voxels * 1e4:10.4f} {cpu:7.3f}")
    print(
        f"peak memory of the maps (tracemalloc, beyond the input): {max(peaks.values()):.0f} MiB; "
        f"process peak RSS {peak_rss_mb():.0f} MiB (simulation and input included); "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
