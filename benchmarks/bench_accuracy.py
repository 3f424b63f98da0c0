"""Accuracy of every SVD method against the simulator's truth, per tissue class.

Two ways to run it:

    python benchmarks/bench_accuracy.py --simulate [--subjects 4] [--seed 2026]
    python benchmarks/bench_accuracy.py --results results --participants demo/participants.tsv

``--simulate`` (default) simulates the demo cohort in memory (``bolus simulate --subjects 4
--seed 2026`` draws exactly these subjects) and runs the perfusion stage on the
truth-aligned series: ΔR2* from the signal (:func:`concentration_from_signal`, true brain
mask), automatic AIF (:func:`select_aif`), maps of every method. No conversion, motion
correction or mask estimation: the figures are those of the deconvolution itself.
``--results`` reads the maps of a finished workflow run instead.

Prints, per method and tissue (GM, WM): the median ratio estimate/truth of CBF and CBV, the
median and the mean absolute Tmax error (s) against the simulator's true Tmax
(:func:`bolus.simulate.kinetics.effective_residue_peak_time`), and, for the healthy
subjects, the volume (ml) of false lesion (Tmax > 6 s inside the brain). With
``--simulate`` the column ``attainable`` is the CBF an exact deconvolution with the global
AIF would give: the peak of the dispersed residue h_β ⊗ R (< 1 of the true CBF wherever the
simulator disperses the bolus), the ceiling that no SVD method can pass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from bolus.simulate.phantom import BACKGROUND, GM, SCALP, SKULL, WM

TISSUES = {"gm": GM, "wm": WM}
LESION_TMAX_S = 6.0


def attainable_cbf_fraction(phantom, brain, window_s=40.0, dt_s=0.1) -> np.ndarray:
    """max_t (h_β ⊗ R)(t) per voxel of ``brain``: the fraction of the true CBF that an exact
    deconvolution with the global AIF can recover, dispersion being part of the residue it
    sees (Calamante 2000). 1 without dispersion."""
    from bolus.simulate import kinetics

    t = np.arange(0.0, window_s, dt_s)
    residue = kinetics.residue_function(t, phantom.mtt_s[brain], phantom.residue_shape[brain])
    kernel = kinetics.exponential_kernel(t, phantom.dispersion_s[brain])
    size = 2 * t.size
    seen = np.fft.irfft(np.fft.rfft(residue, size) * np.fft.rfft(kernel, size), size)[:, : t.size]
    return (seen * dt_s).max(axis=1)


def tissue_rows(pid, method, maps, truth, labels, inside) -> list[dict]:
    """Per tissue: CBF/CBV median ratio, Tmax median error and MAE."""
    rows = []
    for tissue, label in TISSUES.items():
        voxels = inside & (labels == label) & np.isfinite(truth["cbf"]) & (truth["cbf"] > 0)
        error = maps["tmax"][voxels] - truth["tmax"][voxels]
        values = {
            "cbf_ratio": np.median(maps["cbf"][voxels] / truth["cbf"][voxels]),
            "cbv_ratio": np.median(maps["cbv"][voxels] / truth["cbv"][voxels]),
            "tmax_median_error_s": np.median(error),
            "tmax_mae_s": np.mean(np.abs(error)),
        }
        rows += [
            {"participant_id": pid, "method": method, "tissue": tissue, "metric": k, "value": v}
            for k, v in values.items()
        ]
    return rows


def simulated_cohort(n_subjects: int, seed: int, config=None):
    """Yield (pid, pathology, maps by method, truth, labels, brain, voxel volume ml); the
    maps include an ``attainable`` entry: CBF = truth × :func:`attainable_cbf_fraction`."""
    from bolus.config import PerfusionConstants, with_defaults
    from bolus.perfusion.aif import select_aif
    from bolus.perfusion.concentration import concentration_from_signal
    from bolus.simulate.cohort import participant_id, simulate_subject
    from bolus.simulate.phantom import PATHOLOGIES
    from bolus.stages import compute_maps

    config = with_defaults(config)
    pathologies = ("healthy", "stroke", "tumour")
    assert all(p in PATHOLOGIES for p in pathologies)
    constants = PerfusionConstants.from_config(config)
    for number in range(1, n_subjects + 1):
        pathology = pathologies[(number - 1) % len(pathologies)]
        sim = simulate_subject(seed, number, pathology, constants=constants)
        brain = sim.truth["brain"] > 0
        # the intracranial volume (brain, CSF, vessels), as the pipeline's brain mask
        intracranial = ~np.isin(sim.truth["labels"], (BACKGROUND, SCALP, SKULL))
        conc, _ = concentration_from_signal(sim.signal, sim.te_s, sim.time_s, mask=intracranial)
        aif = select_aif(conc, sim.time_s, intracranial, n_voxels=config["aif"]["n_voxels"])
        maps = {
            m: compute_maps(
                conc, sim.time_s, aif.curve, m, brain, config["svd"], config["constants"]
            )
            for m in config["svd"]["methods"]
        }
        attainable = np.zeros(brain.shape, np.float32)
        attainable[brain] = sim.truth["cbf"][brain] * attainable_cbf_fraction(sim.phantom, brain)
        maps["attainable"] = {"cbf": attainable, "cbv": sim.truth["cbv"], "tmax": sim.truth["tmax"]}
        grid = sim.phantom.grid
        voxel_ml = grid.pixel_spacing_mm**2 * grid.slice_spacing_mm / 1000.0
        yield (
            participant_id(number, n_subjects),
            pathology,
            maps,
            sim.truth,
            sim.truth["labels"],
            brain,
            voxel_ml,
        )


def run_simulated(n_subjects: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, lesions = [], []
    for pid, pathology, maps, truth, labels, brain, voxel_ml in simulated_cohort(n_subjects, seed):
        for method, method_maps in maps.items():
            rows += tissue_rows(pid, method, method_maps, truth, labels, brain)
            if pathology == "healthy" and method != "attainable":
                false = brain & (method_maps["tmax"] > LESION_TMAX_S)
                lesions.append(
                    {
                        "participant_id": pid,
                        "method": method,
                        "false_lesion_ml": false.sum() * voxel_ml,
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(lesions)


def run_results(output_dir: Path, participants_tsv: Path) -> pd.DataFrame:
    from bolus import paths
    from bolus.io.nifti import load_volume, resample_to_grid
    from bolus.participants import read_participants
    from bolus.perfusion.methods import METHODS as SVD_METHODS

    participants = read_participants(participants_tsv)
    rows = []
    for pid, reference in zip(
        participants["participant_id"], participants["reference_dir"], strict=True
    ):
        if not reference:
            continue
        reference = Path(reference)
        sp = paths.SubjectPaths(output_dir, pid)
        if not (reference / "labels.nii.gz").exists() or not sp.map("osvd", "cbf").exists():
            continue
        mask, affine = load_volume(sp.brain_mask)

        def on_grid(path, order, shape=mask.shape, affine=affine):
            data, data_affine = load_volume(path)
            return resample_to_grid(data, data_affine, shape, affine, order=order)

        labels = on_grid(reference / "labels.nii.gz", 0)
        truth = {name: on_grid(reference / f"{name}.nii.gz", 0) for name in ("cbf", "cbv", "tmax")}
        for method in SVD_METHODS:
            maps = {name: load_volume(sp.map(method, name))[0] for name in ("cbf", "cbv", "tmax")}
            rows += tissue_rows(pid, method, maps, truth, labels, mask > 0)
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="in-memory demo cohort (default)")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--results", type=Path, help="output_dir of a finished run")
    parser.add_argument("--participants", type=Path, default=Path("demo/participants.tsv"))
    args = parser.parse_args(argv)

    lesions = None
    if args.results is not None:
        table = run_results(args.results, args.participants)
    else:
        table, lesions = run_simulated(args.subjects, args.seed)
    if table.empty:
        raise SystemExit("no subject with maps and simulator labels found")
    wide = table.pivot_table(
        index=["metric", "tissue"], columns="method", values="value", aggfunc="median"
    )
    print("cohort medians over subjects (CBF, CBV: estimate/truth; Tmax: estimate − truth, s)")
    print(wide.round(3).to_string())
    if lesions is not None and not lesions.empty:
        print("\nfalse lesion (Tmax > 6 s) in healthy subjects, ml")
        print(lesions.pivot(index="participant_id", columns="method").round(1).to_string())


if __name__ == "__main__":
    main()
