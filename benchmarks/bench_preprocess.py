"""Preprocessing of one 128×128×20×60 subject: wall time and peak memory.

    python benchmarks/bench_preprocess.py [--runs 3] [--workers 2] [--matrix 128x128x20]
                                          [--timepoints 60] [--no-syn]

Simulates one subject with 2 mm of head drift, writes it as a NIfTI, then times
:func:`bolus.stages.preprocess_subject` (ANTs rigid motion correction of every volume to the
mean pre-bolus volume with ``--workers`` processes, then the MNI152 brain mask registered
affine + SyN) ``--runs`` times, each in a fresh process so that the peak resident memory is
the run's own (this process and its worker processes, the larger of the two). CPU seconds
(this process + workers) are printed too: on a loaded machine they, divided by the workers,
estimate the wall time on idle cores.
Target (issue 3): ≤ 60 s on 2 cores, ≤ 2 GB. On a shared machine report best and median.
Also checks that the run leaves nothing in the system temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ONE_RUN = """
import json, resource, sys, time
from bolus.paths import SubjectPaths
from bolus.stages import preprocess_subject
dsc, out, workers, syn = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
import bolus.preprocess.mask as mask
if not syn:
    mask_brain = mask.brain_mask
    mask.brain_mask = lambda *a, **k: mask_brain(*a, **{**k, "nonlinear": False})
start = time.perf_counter()
preprocess_subject(SubjectPaths(out, "sub-01").with_input(dsc=dsc), workers=workers)
seconds = time.perf_counter() - start
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
print(json.dumps({"s": seconds, "cpu_s": cpu, "self_mb": me.ru_maxrss / 1024,
                  "worker_mb": kids.ru_maxrss / 1024}))
"""


def simulate(folder: Path, matrix, n_timepoints: int) -> Path:
    import nibabel as nib
    import numpy as np

    from bolus.simulate.cohort import simulate_subject

    sim = simulate_subject(3, 1, "stroke", matrix=matrix, n_timepoints=n_timepoints, motion_mm=2.0)
    image = nib.Nifti1Image(sim.signal.astype(np.float32), sim.phantom.grid.affine_ras)
    image.header.set_xyzt_units("mm", "sec")
    path = folder / "dsc.nii.gz"
    nib.save(image, path)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--matrix", default="128x128x20")
    parser.add_argument("--timepoints", type=int, default=60)
    parser.add_argument("--no-syn", action="store_true", help="affine template registration only")
    args = parser.parse_args(argv)
    matrix = tuple(int(v) for v in args.matrix.split("x"))
    system_tmp = Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="bolus-bench-", dir=".") as folder:
        folder = Path(folder)
        start = time.perf_counter()
        dsc = simulate(folder, matrix, args.timepoints)
        print(f"simulated {matrix}×{args.timepoints} in {time.perf_counter() - start:.1f} s")
        results = []
        for run in range(args.runs):
            out = folder / f"run{run}"
            out.mkdir()
            before = set(system_tmp.iterdir())
            proc = subprocess.run(
                [sys.executable, "-c", _ONE_RUN, str(dsc), str(out), str(args.workers),
                 "0" if args.no_syn else "1"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            record = json.loads(proc.stdout.strip().splitlines()[-1])
            left = sorted(p.name for p in set(system_tmp.iterdir()) - before if "bolus" in p.name)
            left += sorted(p.name for p in out.iterdir() if p.name.startswith("."))
            record["peak_mb"] = max(record["self_mb"], record["worker_mb"])
            results.append(record)
            print(
                f"run {run + 1}: {record['s']:.1f} s wall, {record['cpu_s']:.1f} s CPU, peak RSS {record['peak_mb']:.0f} MB "
                f"(main {record['self_mb']:.0f} MB, largest worker {record['worker_mb']:.0f} MB)"
                + (f", LEFT BEHIND: {left}" if left else ", no temporary files left")
            )
        seconds = [r["s"] for r in results]
        peak = max(r["peak_mb"] for r in results)
        print(
            f"\npreprocess {matrix}×{args.timepoints}, workers {args.workers}, "
            f"{'affine' if args.no_syn else 'affine+SyN'} mask: best {min(seconds):.1f} s, "
            f"median {statistics.median(seconds):.1f} s over {len(seconds)} runs "
            f"(CPU {min(r['cpu_s'] for r in results):.1f} s: on {args.workers} idle cores "
            f"≈ {min(r['cpu_s'] for r in results) / args.workers:.0f} s); "
            f"peak RSS {peak:.0f} MB (target ≤ 60 s, ≤ 2048 MB)"
        )


if __name__ == "__main__":
    main()
