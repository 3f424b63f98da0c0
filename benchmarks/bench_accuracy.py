"""Accuracy of every SVD method against the simulator's truth, per tissue class.

    python benchmarks/bench_accuracy.py [results] [demo/participants.tsv]

For each subject of a finished run whose reference_dir holds the simulator's labels.nii.gz,
prints the median ratio estimate/truth of CBF and CBV and the median Tmax error (s) in grey
and white matter, then the cohort medians. Reads files only; run the workflow first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bolus import paths
from bolus.io.nifti import load_volume, resample_to_grid
from bolus.participants import read_participants
from bolus.simulate.phantom import GM, WM

TISSUES = {"gm": GM, "wm": WM}


def subject_accuracy(output_dir: Path, pid: str, reference_dir: Path) -> list[dict]:
    sp = paths.SubjectPaths(output_dir, pid)
    mask, affine = load_volume(sp.brain_mask)
    labels_path = reference_dir / "labels.nii.gz"
    if not labels_path.exists() or not sp.map("osvd", "cbf").exists():
        return []
    labels, labels_affine = load_volume(labels_path)
    labels = resample_to_grid(labels, labels_affine, mask.shape, affine, order=0)
    rows = []
    for name in ("cbf", "cbv", "tmax"):
        truth, truth_affine = load_volume(reference_dir / f"{name}.nii.gz")
        truth = resample_to_grid(truth, truth_affine, mask.shape, affine, order=0)
        for method in paths.SVD_METHODS:
            estimate = load_volume(sp.map(method, name))[0]
            for tissue, label in TISSUES.items():
                voxels = (mask > 0) & (labels == label) & np.isfinite(truth) & (truth > 0)
                if name == "tmax":
                    value = float(np.median(estimate[voxels] - truth[voxels]))
                else:
                    value = float(np.median(estimate[voxels] / truth[voxels]))
                rows.append(
                    {"participant_id": pid, "map": name, "method": method, "tissue": tissue,
                     "value": value}
                )  # fmt: skip
    return rows


def main(argv: list[str]) -> None:
    output_dir = Path(argv[1] if len(argv) > 1 else "results")
    participants = read_participants(argv[2] if len(argv) > 2 else "demo/participants.tsv")
    rows = []
    for pid, reference in zip(
        participants["participant_id"], participants["reference_dir"], strict=True
    ):
        if reference:
            rows += subject_accuracy(output_dir, pid, Path(reference))
    table = pd.DataFrame(rows)
    if table.empty:
        raise SystemExit("no subject with maps and simulator labels found")
    wide = table.pivot_table(
        index=["map", "tissue"], columns="method", values="value", aggfunc="median"
    )
    print("cohort medians (CBF, CBV: estimate/truth; Tmax: estimate − truth in s)")
    print(wide.round(3).to_string())


if __name__ == "__main__":
    main(sys.argv)
