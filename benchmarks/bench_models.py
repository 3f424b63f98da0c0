"""Learned models: inference time per subject, and accuracy on a cohort's test subjects.

    python benchmarks/bench_models.py speed [--models stnet talebi ...] [--shape 128 128 20 60]
                                            [--threads 2] [--device cpu] [--shipped]
    python benchmarks/bench_models.py accuracy RESULTS PARTICIPANTS.tsv [--split test]

``speed``: every model, built with the schema's default sizes (random weights: inference
time does not depend on them; the random forest is fitted on random data), predicts one
synthetic subject of the given shape whose brain mask is an ellipsoid filling ~45 % of
the grid (≈ 150k voxels at 128×128×20), as :func:`bolus.learn.specs` does in the workflow
(normalisation included). Prints wall and process CPU seconds (summed over threads; the
fairer figure on a busy machine) per model and the 1-minute load average. Targets on 2 CPU cores:
stnet ≤ 30 s, talebi ≤ 10 s, transformer ≤ 60 s. With ``--shipped``: the shipped weights of
the listed models instead (each subject resampled onto their own time grid, as in the
workflow).

``accuracy``: for every subject of ``--split`` (default ``test``) of a finished run, every
method's maps against the reference maps, over the voxels where the metrics rules compare
(brain mask ∩ every reference map finite, :func:`bolus.stages.subject_metrics_table`):

* ``cbf_median_abs_rel_err``, ``cbv_median_abs_rel_err``: median over those voxels (with
  reference > 0) of |estimate − reference| / reference;
* ``cbf_rmse`` (ml/100 g/min): root mean square error over those voxels (Zeng et al.'s
  CBF RMSE);
* ``tmax_mae_s``: mean |estimate − reference| (s);
* ``tmax_dice``: Dice of the hypoperfusion lesions, Tmax > ``lesion.tmax_threshold_s``
  (6 s) of the estimate and of the reference, with the metrics rules' own
  :func:`bolus.evaluate.lesions.hypoperfusion_mask` and :func:`~bolus.evaluate.lesions.dice`
  — only for subjects whose reference has such a lesion.

Then the median of each over the subjects (``n``: subjects scored; ``n_dice``: subjects
with a reference lesion). Reads files only.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bolus import paths
from bolus.models import MODELS


def synthetic_subject(shape, seed=0):
    from bolus.learn.datasets import SubjectSeries
    from bolus.simulate.kinetics import arterial_input

    nx, ny, nz, nt = shape
    rng = np.random.default_rng(seed)
    t = np.arange(nt) * 1.5
    aif = arterial_input(t) * 4.0
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (nx, ny, nz)], indexing="ij"))
    mask = (grid[0] ** 2 / 0.75**2 + grid[1] ** 2 / 0.9**2 + grid[2] ** 2 / 1.1**2) < 1
    scale = rng.uniform(0.005, 0.05, (nx, ny, nz, 1)).astype(np.float32)
    shift = np.roll(aif, 2)
    conc = scale * shift.astype(np.float32) + rng.normal(0, 0.1, (nx, ny, nz, nt)).astype(
        np.float32
    )
    s0 = rng.uniform(500, 1500, (nx, ny, nz)).astype(np.float32)
    return SubjectSeries("sub-bench", conc, t, aif, mask, s0, np.eye(4))


def build_untrained(name, n_t, device, threads):
    import torch

    from bolus.config import schema_defaults
    from bolus.learn.specs import Context, get_spec

    defaults = schema_defaults()
    params = {**defaults["training"], **defaults["model_params"].get(name, {}), "seed": 0}
    params["threads"] = threads
    spec = get_spec(name)
    norm = {m: (1.0, 1.0) for m in paths.MAPS}
    ctx = Context(torch.device(device), np.arange(n_t) * 1.5, norm, params, 0.7, 6.0)
    model = spec.build(n_t, params)
    if spec.framework == "sklearn":
        rng = np.random.default_rng(0)
        model.fit(rng.normal(size=(5000, 2 * n_t)), rng.normal(size=(5000, len(spec.maps))))
    else:
        model = model.to(device).eval()
    return spec, model, ctx


def speed(args) -> None:
    import torch

    from bolus.learn.predict import predict_maps

    torch.set_num_threads(args.threads)
    subject = synthetic_subject(args.shape)
    print(
        f"subject {tuple(args.shape)}, {int(subject.mask.sum())} brain voxels, "
        f"{args.threads} threads, device {args.device}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| model | wall s | CPU s (all threads) | load avg (1 min) |\n|---|---|---|---|")
    for name in args.models:
        if args.shipped:
            from bolus.learn.predict import load_trained
            from bolus.weights import shipped, verified

            if name not in shipped():
                continue
            spec, model, ctx = load_trained(verified(name), args.device, args.threads)
            name = f"{name} (shipped, {ctx.times_s.size}-frame grid)"
        else:
            spec, model, ctx = build_untrained(name, args.shape[3], args.device, args.threads)
        started, cpu = time.perf_counter(), time.process_time()
        maps = predict_maps(spec, model, ctx, subject)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert set(maps) == set(spec.maps)
        load = os.getloadavg()[0]
        print(f"| {name} | {seconds:.1f} | {cpu:.1f} | {load:.2f} |", flush=True)


def map_accuracy(estimates: dict, reference: dict, defined, threshold: float) -> dict:
    """The accuracy columns (module docstring) of one method's ``estimates`` ({map: array})
    against ``reference`` ({map: array}) over the voxels ``defined``."""
    from bolus.evaluate.lesions import dice, hypoperfusion_mask

    row = {}
    for name in ("cbf", "cbv"):
        if name in estimates:
            est, ref = estimates[name], reference[name]
            ok = defined & (ref > 0)
            row[f"{name}_median_abs_rel_err"] = float(
                np.median(np.abs(est[ok] - ref[ok]) / ref[ok])
            )
            if name == "cbf":
                row["cbf_rmse"] = float(np.sqrt(np.mean((est[defined] - ref[defined]) ** 2)))
    if "tmax" in estimates:
        est, ref = estimates["tmax"], reference["tmax"]
        row["tmax_mae_s"] = float(np.mean(np.abs(est[defined] - ref[defined])))
        truth_lesion = hypoperfusion_mask(ref, defined, threshold)
        if truth_lesion.any():
            row["tmax_dice"] = dice(hypoperfusion_mask(est, defined, threshold), truth_lesion)
    return row


def reference_and_mask(output_dir, pid, reference_dir):
    """(reference maps, voxels compared) of a subject as the metrics rules compare them:
    the brain mask where every reference map is finite; None before the brain mask exists."""
    from bolus.evaluate.reference import load_reference_maps
    from bolus.io.nifti import load_volume

    sp = paths.SubjectPaths(output_dir, pid)
    if not sp.brain_mask.exists():
        return None
    mask, affine = load_volume(sp.brain_mask)
    reference = load_reference_maps(reference_dir, mask.shape, affine)
    defined = (mask > 0) & np.logical_and.reduce([np.isfinite(r) for r in reference.values()])
    return reference, defined


def subject_accuracy(output_dir, pid, reference_dir, methods, threshold) -> list[dict]:
    from bolus.io.nifti import load_volume

    found_reference = reference_and_mask(output_dir, pid, reference_dir)
    if found_reference is None:
        return []
    reference, defined = found_reference
    sp = paths.SubjectPaths(output_dir, pid)
    rows = []
    for method in methods:
        estimates = {
            m: load_volume(sp.map(method, m))[0]
            for m in ("cbf", "cbv", "tmax")
            if sp.map(method, m).exists()
        }
        row = {"participant_id": pid, "method": method}
        row.update(map_accuracy(estimates, reference, defined, threshold))
        rows.append(row)
    return rows


def accuracy(args) -> None:
    from bolus.participants import read_participants

    if args.threshold is None:
        from bolus.evaluate.lesions import default_tmax_threshold_s

        args.threshold = default_tmax_threshold_s()
    participants = read_participants(args.participants)
    chosen = participants[participants["split"] == args.split]
    methods = args.methods or (["osvd"] + [m for m in MODELS])
    rows = []
    for pid, reference in zip(chosen["participant_id"], chosen["reference_dir"], strict=True):
        if reference:
            rows += subject_accuracy(Path(args.results), pid, reference, methods, args.threshold)
    table = pd.DataFrame(rows)
    present = [
        m for m in methods if m in set(table["method"]) and table[table.method == m].shape[1] > 2
    ]
    summary = table.groupby("method").median(numeric_only=True).reindex(present)
    summary.insert(0, "n", table.groupby("method").size().reindex(present))
    if "tmax_dice" in table:
        summary["n_dice"] = table.groupby("method")["tmax_dice"].count().reindex(present)
    columns = ["n", "cbf_median_abs_rel_err", "cbv_median_abs_rel_err", "cbf_rmse",
               "tmax_mae_s", "tmax_dice", "n_dice"]  # fmt: skip
    summary = summary[[c for c in columns if c in summary]]
    for c in ("n", "n_dice"):
        if c in summary:
            summary[c] = summary[c].fillna(0).astype(int).astype(str)
    print(f"{args.split} subjects: {len(chosen)}; medians over subjects")
    if args.per_subject:
        print(table.to_string(index=False, float_format="%.3f"))
    print(summary.to_markdown(floatfmt=".3f") if hasattr(summary, "to_markdown") else summary)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed")
    # pix2pix reads the TOF, not the DSC series: timed by bench_transformer_pix2pix.py
    s.add_argument(
        "--models", nargs="+", default=[m for m, i in MODELS.items() if i.layout != "tof"]
    )
    s.add_argument("--shape", nargs=4, type=int, default=[128, 128, 20, 60])
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--device", default="cpu")
    s.add_argument(
        "--shipped", action="store_true", help="the shipped weights (their own time grid)"
    )
    a = sub.add_parser("accuracy")
    a.add_argument("results")
    a.add_argument("participants")
    a.add_argument("--split", default="test")
    a.add_argument("--methods", nargs="*")
    a.add_argument("--per-subject", action="store_true", help="print every subject's row too")
    a.add_argument("--threshold", type=float, help="Tmax lesion threshold (s; config default)")
    args = parser.parse_args(argv)
    speed(args) if args.command == "speed" else accuracy(args)


if __name__ == "__main__":
    main()
