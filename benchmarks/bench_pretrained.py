"""The shipped weights on cohorts they never saw, side by side with oSVD.

    python benchmarks/bench_pretrained.py [--work DIR] [--subjects 6] [--seed 777]
        [--modality dsc|ctp] [--models mlp ...] [--keep]

Simulates a cohort the weights were not trained on (a new seed, and an acquisition away
from the centre of their draws: TR 1.6 s, 50 frames, SNR 30, an arterial peak ΔR2* of
55–65 1/s, lower than the simulator's 70–90), every subject a `test` subject (no reference
maps to learn from), and runs the workflow with `training.source: pretrained` and the SVD
method oSVD. Then, per method, over the brain voxels of every subject (the truth's brain
within the pipeline's brain mask):

* CBF, CBV: median |estimate/truth − 1| and Pearson r (pooled voxels);
* Tmax: mean absolute error (s);
* Dice of Tmax > 6 s against the truth lesion, mean over the stroke subjects.

Prints one markdown table (figures, not a timed test).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bolus import paths  # noqa: E402

ACQUISITION = {"n_timepoints": 50, "tr_s": 1.6, "snr": 30.0, "aif_peak_r2s": (55.0, 65.0)}


def simulate(work: Path, n: int, seed: int, modality: str) -> Path:
    from bolus.simulate.cohort import simulate_cohort

    participants = simulate_cohort(
        work / "cohort", n, seed, pathologies=("stroke", "healthy", "tumour"),
        modality=modality, jobs=2, **ACQUISITION,
    )  # fmt: skip
    rows = list(csv.DictReader(open(participants), delimiter="\t"))
    for row in rows:
        row["split"] = "test"
    with open(participants, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return participants


def run_workflow(work: Path, participants: Path, modality: str, models: list[str]) -> None:
    import yaml

    config = {
        "participants": str(participants),
        "output_dir": "results",
        "modality": modality,
        "svd": {"methods": ["osvd"]},
        "models": models,
        "training": {"source": "pretrained"},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--profile", str(REPO / "profiles" / "local"),
           "--cores", "2"]  # fmt: skip
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode not in (0, 3):
        sys.exit(proc.stderr[-3000:])


def scores(work: Path, participants: Path, methods: list[str]) -> list[dict]:
    import nibabel as nib

    rows = list(csv.DictReader(open(participants), delimiter="\t"))
    out = work / "results"
    table = []
    for method in methods:
        pooled = {m: ([], []) for m in ("cbf", "cbv", "tmax")}
        dice = []
        for row in rows:
            truth_dir = participants.parent / row["reference_dir"]
            sp = paths.SubjectPaths(out, row["participant_id"])
            if not sp.brain_mask.exists():
                continue
            brain = (nib.load(truth_dir / "brain.nii.gz").get_fdata() > 0) & (
                nib.load(sp.brain_mask).get_fdata() > 0
            )
            if not sp.map(method, "cbf").exists():
                continue
            for name, (est, tru) in pooled.items():
                est.append(nib.load(sp.map(method, name)).get_fdata()[brain])
                tru.append(nib.load(truth_dir / f"{name}.nii.gz").get_fdata()[brain])
            if row.get("group") == "stroke":
                lesion = nib.load(truth_dir / "lesion.nii.gz").get_fdata()[brain] > 0
                found = nib.load(sp.map(method, "tmax")).get_fdata()[brain] > 6.0
                denom = lesion.sum() + found.sum()
                dice.append(2.0 * (lesion & found).sum() / denom if denom else 1.0)
        if not pooled["cbf"][0]:
            continue
        record = {"method": method}
        for name in ("cbf", "cbv"):
            est, tru = (np.concatenate(a) for a in pooled[name])
            ok = tru > 0
            record[f"{name}_median_abs_ratio_err"] = float(np.median(np.abs(est[ok] / tru[ok] - 1)))
            record[f"{name}_median_ratio"] = float(np.median(est[ok] / tru[ok]))
            record[f"{name}_r"] = float(np.corrcoef(est, tru)[0, 1])
        est, tru = (np.concatenate(a) for a in pooled["tmax"])
        record["tmax_mae_s"] = float(np.mean(np.abs(est - tru)))
        record["dice_tmax6"] = float(np.mean(dice)) if dice else float("nan")
        table.append(record)
    return table


def main() -> None:
    from bolus.weights import shipped

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--modality", choices=("dsc", "ctp"), default="dsc")
    ap.add_argument("--models", nargs="*", default=None, help="default: every shipped model")
    args = ap.parse_args()
    models = list(shipped()) if args.models is None else args.models
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_pretrained_"))
    work.mkdir(parents=True, exist_ok=True)
    participants = work / "cohort" / "participants.tsv"
    if not participants.exists():
        participants = simulate(work, args.subjects, args.seed, args.modality)
    run_workflow(work, participants, args.modality, models)
    table = scores(work, participants, ["osvd"] + models)
    print(f"{args.modality}, seed {args.seed}, {args.subjects} subjects, {ACQUISITION}; {work}")
    cols = list(table[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in table:
        print(
            "| "
            + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else r[c] for c in cols)
            + " |"
        )


if __name__ == "__main__":
    main()
