"""Clinical readouts of a small simulated cohort against the truth, and the report's size.

    python benchmarks/bench_clinical.py [--subjects 8] [--seed 42] [--cores 2] [--workdir DIR]
        [--pathologies stroke,stroke,healthy,tumour]

The 40-subject study cohort (benchmarks/models_study40.yaml: ``bolus simulate study40
--subjects 40 --seed 2026``) is ``--subjects 40 --seed 2026 --pathologies
healthy,stroke,tumour --no-motion``.

Simulates ``--subjects`` subjects (pathologies stroke, stroke, healthy, tumour, …; the default
64 × 64 × 12 grid), gives the tumour subjects a lesion mask from the truth labels, runs the
workflow with ``models: []`` (the SVD methods) and ``snakemake --report``, then prints the
reference (truth) readouts against the simulator's lesion volumes, the agreement table
(``metrics/clinical_agreement.tsv``) and the sizes of the figures and the report. 8 subjects
take ≈ 7 minutes on 2 loaded cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def simulate(
    work: Path, n: int, seed: int, pathologies=("stroke", "stroke", "healthy", "tumour"),
    motion: bool = True,
) -> Path:  # fmt: skip
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from bolus.simulate.cohort import simulate_cohort

    participants = simulate_cohort(work / "cohort", n, seed=seed, pathologies=pathologies, jobs=2)
    table = pd.read_csv(participants, sep="\t", dtype=str)
    masks = []
    for pid, group in zip(table["participant_id"], table["group"], strict=True):
        if group != "tumour":
            masks.append("")
            continue
        labels = nib.load(work / "cohort" / "sourcedata" / pid / "truth" / "labels.nii.gz")
        path = f"sourcedata/{pid}/truth/tumour_mask.nii.gz"
        mask = (np.asarray(labels.dataobj) == 10).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, labels.affine), work / "cohort" / path)
        masks.append(path)
    table["lesion_mask"] = masks
    table.to_csv(participants, sep="\t", index=False)
    config = work / "config.yaml"
    config.write_text(f"participants: {participants}\noutput_dir: {work / 'results'}\nmodels: []\n"
                      f"motion: {{enabled: {str(motion).lower()}}}\n")  # fmt: skip
    return config


def snakemake(work: Path, config: Path, *extra: str) -> None:
    exe = Path(sys.executable).with_name("snakemake")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [str(exe), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(config), *extra]  # fmt: skip
    subprocess.run(command, env=env, check=False, capture_output=True)


def truth_against_simulator(work: Path):
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from bolus import paths

    table = pd.read_csv(paths.clinical_table(work / "results"), sep="\t", na_values="n/a")
    rows = []
    for pid in table["participant_id"].unique():
        truth = work / "cohort" / "sourcedata" / pid / "truth"
        image = nib.load(truth / "labels.nii.gz")
        labels = np.asarray(image.dataobj)
        voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000
        lesion = np.asarray(nib.load(truth / "lesion.nii.gz").dataobj) > 0
        reference = table[(table.participant_id == pid) & (table.method == "reference")].iloc[0]
        info = json.loads((truth / "simulation.json").read_text())["phantom"]
        rows.append({"participant_id": pid, "pathology": info["pathology"],
                     "core_label_ml": (labels == 8).sum() * voxel_ml,
                     "core_reference_ml": reference.core_ml,
                     "lesion_label_ml": lesion.sum() * voxel_ml,
                     "tmax6_reference_ml": reference.tmax_gt6s_ml,
                     "gm_wm_cbv_ratio": info["gm_cbv"] / info["wm_cbv"],
                     "gm_rcbv_reference": reference.gm_rcbv})  # fmt: skip
    return pd.DataFrame(rows)


def report_sizes(results: Path) -> dict:
    text = (results / "report.html").read_text(encoding="utf-8")
    match = re.search(r"var results = (\{.*?\});\n", text, re.S)
    embedded = {p: len(e["data_uri"]) for p, e in json.loads(match.group(1)).items()}
    subjects = {p.split("/figures/")[1].split("/")[0] for p in embedded if "/figures/sub-" in p}
    figures = sum(v for p, v in embedded.items() if "/figures/sub-" in p)
    return {"report_mb": len(text.encode()) / 1e6,
            "snakemake_overhead_mb": (len(text.encode()) - sum(embedded.values())) / 1e6,
            "embedded_subjects": len(subjects),
            "figures_per_subject_kb_base64": figures / max(len(subjects), 1) / 1e3}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--pathologies", default="stroke,stroke,healthy,tumour")
    parser.add_argument("--no-motion", action="store_true",
                        help="motion correction off (the study cohort's config: no motion)")  # fmt: skip
    args = parser.parse_args()
    import pandas as pd

    from bolus import paths

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-clinical-"))
    config = simulate(work, args.subjects, args.seed, tuple(args.pathologies.split(",")),
                      not args.no_motion)  # fmt: skip
    snakemake(work, config, "--profile", str(REPO / "profiles" / "local"), "--cores",
              str(args.cores))  # fmt: skip
    snakemake(work, config, "--report", str(work / "results" / "report.html"))
    pd.set_option("display.width", 200)
    print(truth_against_simulator(work).round(3).to_string(index=False))
    agreement = pd.read_csv(paths.clinical_agreement(work / "results"), sep="\t", na_values="n/a")
    print(agreement.drop(columns=["reference"]).round(3).to_string(index=False))
    print(report_sizes(work / "results"))
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
