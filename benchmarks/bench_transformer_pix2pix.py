"""Inference time of the Transformer (Zeng 2025) and 3D pix2pix (Kossen) on one subject.

A 128 × 128 × 20 × 60 DSC subject (TR 1.5 s) whose brain mask is an ellipsoid of ≈ 150,000
voxels; the curves are simulated voxel curves (the time does not depend on their values).
Prints the wall-clock and CPU seconds (summed over threads; on a busy machine the CPU time
is the fairer figure) of ``predict_subject``, after one warm-up call on 1,000 voxels.

    PYTHONPATH=src python benchmarks/bench_transformer_pix2pix.py [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bolus.config import PerfusionConstants
from bolus.models import pix2pix, transformer
from bolus.simulate.voxel_curves import simulate_voxel_curves


def subject(shape=(128, 128, 20), n_t=60, tr_s=1.5):
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), -1)
    mask = np.sum((grid / np.array([0.97, 0.97, 1.05])) ** 2, axis=-1) <= 1.0
    times = np.arange(n_t) * tr_s
    sim = simulate_voxel_curves(np.random.default_rng(0), 4096, PerfusionConstants.from_config())
    tissue, aif, _ = sim.sample_on(times, np.random.default_rng(1))
    conc = np.zeros(shape + (n_t,), np.float32)
    conc[mask] = np.resize(tissue, (int(mask.sum()), n_t))
    return conc, times, aif[0], mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    conc, times, aif, mask = subject()
    print(f"subject {conc.shape}, {int(mask.sum())} brain voxels, {args.threads} threads")

    model = transformer.build(seed=0).to(args.device)
    small = mask & (np.cumsum(mask.ravel()).reshape(mask.shape) <= 1000)
    transformer.predict_subject(model, conc, times, aif, small)
    start, cpu = time.perf_counter(), time.process_time()
    transformer.predict_subject(model, conc, times, aif, mask, batch_size=args.batch)
    print(
        f"transformer: {time.perf_counter() - start:.1f} s wall, "
        f"{time.process_time() - cpu:.1f} s CPU (all threads)"
    )

    gan = pix2pix.build(seed=0).to(args.device)
    tof = np.random.default_rng(2).random(mask.shape).astype(np.float32)
    pix2pix.predict_subject(gan, tof, mask)
    start, cpu = time.perf_counter(), time.process_time()
    pix2pix.predict_subject(gan, tof, mask)
    print(
        f"pix2pix: {time.perf_counter() - start:.1f} s wall, "
        f"{time.process_time() - cpu:.1f} s CPU (all threads)"
    )


if __name__ == "__main__":
    main()
