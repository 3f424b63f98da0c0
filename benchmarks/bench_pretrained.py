"""The shipped weights on cohorts they never saw, side by side with oSVD.

    python benchmarks/bench_pretrained.py [--work DIR] [--subjects 6] [--seed 777]
        [--modality dsc|ctp] [--models mlp ...] [--arrival LOW HIGH] [--snr 30]
    python benchmarks/bench_pretrained.py --finetune [--subjects 16] [--epochs 5] [--unseen]
        [--relative-loss false|true|log] ...

Simulates a cohort the weights were not trained on (a new seed, and an acquisition away
from the centre of their draws: TR 1.6 s, 50 frames, SNR 30, an arterial peak ΔR2* of
55–65 1/s, lower than the simulator's 70–90), every subject a `test` subject (no reference
maps to learn from), and runs the workflow with `training.source: pretrained` and the SVD
method oSVD. Then, per method, over the brain voxels of every subject (the truth's brain
within the pipeline's brain mask):

* CBF, CBV: median |estimate/truth − 1| and Pearson r (pooled voxels);
* Tmax: mean absolute error (s);
* Dice of Tmax > 6 s against the truth lesion, mean over the stroke subjects.

With ``--finetune``: a cohort of the simulator's default acquisition with its own
train/val/test split (no acquisition changes), trained on its train/val subjects twice at
equal epochs, ``training.source: scratch`` then ``finetune`` (from the shipped weights, the
same network sizes), scored on its test subjects beside the shipped weights as they are
(``pretrained``). ``--unseen`` gives that cohort the acquisition above instead (still its
own split): what a group with reference maps of its own protocol gains by fine-tuning.
``--relative-loss`` trains both with that loss (default: the cohort config's, ``false``;
the shipped weights learned with ``log``).

A ``--work`` folder keeps its cohort (``cohort.json`` records how it was simulated) and
its pipeline outputs, so a rerun maps only what changed (a new weights file); options
that ask for another cohort than the one there stop the run.

Prints one markdown table (figures, not a timed test).
"""

from __future__ import annotations

import argparse
import csv
import json
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
PATHOLOGIES = ("stroke", "healthy", "tumour")  # subject n is PATHOLOGIES[(n − 1) % 3]


def cohort_record(
    n: int, seed: int, modality: str, unseen: bool, all_test: bool, arrival=None, snr=None
):
    """How the cohort is simulated (``cohort.json``): with ``unseen``, the acquisition above
    (with ``arrival``, the bolus's arterial arrival drawn from that range, s; with ``snr``,
    that SNR), else the simulator's defaults; with ``all_test`` every subject `test`, else
    the simulator's split."""
    acquisition = {**ACQUISITION, **({"aif_arrival_s": tuple(arrival)} if arrival else {})}
    if snr is not None:
        acquisition["snr"] = float(snr)
    return {"modality": modality, "seed": seed, "subjects": n,
            "acquisition": acquisition if unseen else "the simulator's defaults",
            "all_test": all_test}  # fmt: skip


def simulate(work: Path, record: dict) -> Path:
    """The cohort of ``record`` (:func:`cohort_record`), its subjects split as it says."""
    from bolus.simulate.cohort import simulate_cohort

    acquisition = record["acquisition"]
    unseen = isinstance(acquisition, dict)
    participants = simulate_cohort(
        work / "cohort", record["subjects"], record["seed"],
        pathologies=PATHOLOGIES, modality=record["modality"], jobs=2,
        **(acquisition if unseen else {}),
    )  # fmt: skip
    (work / "cohort.json").write_text(json.dumps(record))
    if not record["all_test"]:
        return participants
    rows = list(csv.DictReader(open(participants), delimiter="\t"))
    for row in rows:
        row["split"] = "test"
    with open(participants, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return participants


def run_workflow(
    work: Path, participants: Path, modality: str, models: list[str], training=None,
    model_params=None,
) -> None:  # fmt: skip
    import yaml

    config = {
        "participants": str(participants),
        "output_dir": "results",
        "modality": modality,
        "motion": {"enabled": False},  # the simulated cohorts have no motion
        "svd": {"methods": ["osvd"]},
        "models": models,
        "training": training or {"source": "pretrained"},
        "model_params": model_params or {},
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


def on_grid(path, truth) -> np.ndarray:
    """The pipeline's map ``path`` on the truth image's voxel axes (dcm2niix flips the
    simulator's rows; the world grid is the same)."""
    import nibabel as nib
    from nibabel.orientations import io_orientation, ornt_transform

    image = nib.load(path)
    moved = image.as_reoriented(ornt_transform(io_orientation(image.affine),
                                               io_orientation(truth.affine)))  # fmt: skip
    if not np.allclose(moved.affine, truth.affine, atol=1e-2):
        sys.exit(f"{path}: not on the truth's grid")
    return np.asarray(moved.dataobj, dtype=float)


def scores(work: Path, participants: Path, methods: list[str]) -> list[dict]:
    import nibabel as nib

    rows = [r for r in csv.DictReader(open(participants), delimiter="\t") if r["split"] == "test"]
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
            truth = nib.load(truth_dir / "brain.nii.gz")
            brain = (truth.get_fdata() > 0) & (on_grid(sp.brain_mask, truth) > 0)
            if not sp.map(method, "cbf").exists():
                continue
            for name, (est, tru) in pooled.items():
                if sp.map(method, name).exists():  # a model writes only the maps it learned
                    est.append(on_grid(sp.map(method, name), truth)[brain])
                    tru.append(nib.load(truth_dir / f"{name}.nii.gz").get_fdata()[brain])
            if row.get("group") == "stroke" and sp.map(method, "tmax").exists():
                lesion = nib.load(truth_dir / "lesion.nii.gz").get_fdata()[brain] > 0
                found = on_grid(sp.map(method, "tmax"), truth)[brain] > 6.0
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
        if pooled["tmax"][0]:
            est, tru = (np.concatenate(a) for a in pooled["tmax"])
            record["tmax_mae_s"] = float(np.mean(np.abs(est - tru)))
        record["dice_tmax6"] = float(np.mean(dice)) if dice else float("nan")
        table.append(record)
    return table


def finetune_against_scratch(
    work, participants, modality, models, epochs, relative_loss=None
) -> list[dict]:
    """The shipped ``models`` as they are (``pretrained``), then trained on the cohort from
    scratch and fine-tuned from the shipped weights at ``epochs`` epochs each, the shipped
    networks' sizes and the loss ``relative_loss`` (None: the config's default); each
    scored."""
    import torch

    from bolus.weights import verified

    sizes = {}
    for model in models:
        params = torch.load(verified(model), map_location="cpu", weights_only=False)["params"]
        sizes[model] = {k: v for k, v in params.items() if k in ("hidden", "dropout")}
    table = []
    loss = {} if relative_loss is None else {"relative_loss": relative_loss}
    for source in ("pretrained", "scratch", "finetune"):
        training = {"source": source, "epochs": epochs, "patience": epochs, **loss}
        params = {m: {**sizes[m], "epochs": epochs} for m in models}
        run_workflow(work, participants, modality, models, training, params)
        for record in scores(work, participants, ["osvd"] + models):
            if record["method"] == "osvd":
                if source == "pretrained":  # the same maps in every run
                    table.append(record)
            else:
                table.append({**record, "method": f"{record['method']} ({source})"})
    return table


def main() -> None:
    from bolus.simulate.phantom import AIF_ARRIVAL_S
    from bolus.weights import shipped

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--subjects", type=int, default=None, help="default 6; 16 with --finetune")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--modality", choices=("dsc", "ctp"), default="dsc")
    ap.add_argument("--models", nargs="*", default=None, help="default: every shipped model")
    ap.add_argument("--finetune", action="store_true", help="fine-tuning against scratch")
    ap.add_argument("--epochs", type=int, default=5, help="with --finetune")
    ap.add_argument(
        "--unseen", action="store_true",
        help="with --finetune: the cohort has the unseen acquisition (its own split)",
    )  # fmt: skip
    ap.add_argument(
        "--relative-loss", choices=("false", "true", "log"), default=None,
        help="with --finetune: the training loss (default: the config's, false)",
    )  # fmt: skip
    ap.add_argument("--score-only", action="store_true", help="score the maps in --work")
    low, high = AIF_ARRIVAL_S
    ap.add_argument(
        "--arrival", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
        help=f"range of the bolus's arterial arrival (s; the simulator's: {low:g} {high:g})",
    )  # fmt: skip
    ap.add_argument(
        "--snr", type=float, default=None, help=f"the cohort's SNR (default {ACQUISITION['snr']:g})"
    )
    args = ap.parse_args()
    if args.finetune and not args.unseen and (args.arrival or args.snr is not None):
        ap.error("--arrival and --snr set the unseen acquisition; --finetune's cohort has "
                 "the simulator's defaults unless --unseen")  # fmt: skip
    if not args.finetune and (args.unseen or args.relative_loss):
        ap.error("--unseen and --relative-loss are --finetune options (the cohort without "
                 "--finetune is always the unseen acquisition's, every subject test)")  # fmt: skip
    models = list(shipped()) if args.models is None else args.models
    subjects = args.subjects or (16 if args.finetune else 6)
    unseen = args.unseen or not args.finetune
    record = cohort_record(
        subjects, args.seed, args.modality, unseen, not args.finetune, args.arrival, args.snr
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_pretrained_"))
    work.mkdir(parents=True, exist_ok=True)
    participants = work / "cohort" / "participants.tsv"
    made = work / "cohort.json"  # how the cohort in --work was simulated
    if not participants.exists():
        participants = simulate(work, record)
    elif (
        not args.score_only
        and made.exists()
        and json.loads(made.read_text()) != json.loads(json.dumps(record))
    ):
        sys.exit(f"{work}: its cohort was simulated as {made.read_text()}, not as these "
                 f"options ask ({json.dumps(record)}): use another --work, or --score-only")  # fmt: skip
    if args.score_only:
        table = scores(work, participants, ["osvd"] + models)
    elif args.finetune:
        loss = {"false": False, "true": True}.get(args.relative_loss, args.relative_loss)
        table = finetune_against_scratch(
            work, participants, args.modality, models, args.epochs, loss
        )
        print(f"test split scored, {args.epochs} epochs each")
    else:
        run_workflow(work, participants, args.modality, models)
        table = scores(work, participants, ["osvd"] + models)
    print(
        f"{json.loads(made.read_text()) if made.exists() else 'cohort of unknown origin'}; {work}"
    )
    cols = list(table[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in table:
        print(
            "| "
            + " | ".join(
                f"{r[c]:.3f}" if isinstance(r.get(c), float) else r.get(c, "–") for c in cols
            )
            + " |"
        )


if __name__ == "__main__":
    main()
