"""Study aggregation over a large cohort of per-subject metric files.

    python benchmarks/bench_aggregate.py [N_SUBJECTS=1000] [--figures]

Writes N simulated per-subject metric tables with the workflow's layout (methods ssvd,
csvd, osvd with every map, plus two learned models with fewer maps — talebi: CBF, CBV;
stnet: CBF, CBV, Tmax — regions brain, gm, wm and, for half the subjects, lesion; every
region metric and the lesion agreement rows), a participants.tsv with group and site, and
a qc.tsv with 10 excluded subjects. Then times ``write_study_tables`` (read every file one
by one, study table with the group and site strata, paired comparison with osvd, markdown,
writes), and with ``--figures`` the study figures drawn from subjects.tsv.
The figure that matters: aggregation of 1,000 subjects ≤ 30 s.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bolus import paths
from bolus.evaluate.aggregate import (
    LESION_METRICS,
    REGION_METRICS,
    SUBJECT_COLUMNS,
    write_study_tables,
    write_tsv,
)

METHOD_MAPS = {
    "ssvd": paths.MAPS,
    "csvd": paths.MAPS,
    "osvd": paths.MAPS,
    "talebi": ("cbf", "cbv"),
    "stnet": ("cbf", "cbv", "tmax"),
}


def subject_rows(pid: str, lesion: bool) -> list[tuple]:
    regions = ("brain", "gm", "wm", "lesion") if lesion else ("brain", "gm", "wm")
    rows = []
    for method, maps in METHOD_MAPS.items():
        for name in maps:
            rows += [(pid, method, name, r, m) for r in regions for m in REGION_METRICS]
            if name == "tmax":
                rows += [(pid, method, name, "brain", m) for m in LESION_METRICS]
    return rows


def write_cohort(folder: Path, n: int, seed: int = 0) -> tuple[list[Path], Path, Path]:
    rng = np.random.default_rng(seed)
    tables = []
    for i in range(1, n + 1):
        pid = f"sub-{i:04d}"
        frame = pd.DataFrame.from_records(subject_rows(pid, lesion=i % 2 == 0),
                                          columns=list(SUBJECT_COLUMNS[:-1]))  # fmt: skip
        frame["value"] = rng.gamma(2.0, 0.2, len(frame))
        frame.loc[rng.random(len(frame)) < 0.01, "value"] = np.nan  # a few failed values
        tables.append(write_tsv(frame, folder / pid / "perf" / f"{pid}_metrics.tsv"))
    ids = [f"sub-{i:04d}" for i in range(1, n + 11)]
    participants = folder / "participants.tsv"
    pd.DataFrame(
        {
            "participant_id": ids,
            "group": rng.choice(["healthy", "stroke", "tumour"], len(ids)),
            "site": rng.choice(["siteA", "siteB", "siteC"], len(ids)),
        }
    ).to_csv(participants, sep="\t", index=False)
    qc = folder / "qc.tsv"
    pd.DataFrame(
        {
            "participant_id": ids,
            "stage": ["metrics"] * n + ["inspect"] * 10,
            "status": ["ok"] * n + ["failed"] * 10,
            "reason": [""] * n + ["no dynamic series"] * 10,
        }
    ).to_csv(qc, sep="\t", index=False)
    return tables, participants, qc


def main(argv: list[str]) -> None:
    n = int(next((a for a in argv if a.isdigit()), 1000))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        tables, participants, qc = write_cohort(folder, n)
        print(f"wrote {n} subject metric files in {time.perf_counter() - t0:.1f} s")
        t0, c0 = time.perf_counter(), time.process_time()
        written = write_study_tables(
            tables, folder / "results", participants, ["group", "site"], "osvd", qc
        )
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows = sum(1 for _ in open(written["subjects"])) - 1
        study_rows = sum(1 for _ in open(written["study"])) - 1
        paired_rows = sum(1 for _ in open(written["paired"])) - 1
        print(
            f"aggregation of {n} subjects ({rows} rows): {elapsed:.1f} s wall, {cpu:.1f} s CPU "
            f"(study.tsv {study_rows} rows, paired.tsv {paired_rows} rows; target ≤ 30 s)"
        )
        if "--figures" in argv:
            from bolus.evaluate.report import study_figures

            t0, c0 = time.perf_counter(), time.process_time()
            study_figures(written["subjects"], folder / "results")
            print(
                f"study figures from subjects.tsv: {time.perf_counter() - t0:.1f} s wall, "
                f"{time.process_time() - c0:.1f} s CPU"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
