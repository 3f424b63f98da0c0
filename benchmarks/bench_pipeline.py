"""Per-stage wall time and peak memory of a finished run, from Snakemake's benchmark tables.

    python benchmarks/bench_pipeline.py [results]

Prints, for every stage, the mean and maximum seconds per subject and the peak RSS (MB).
Run `make demo` first (or any workflow run); this reads `<output_dir>/benchmarks/`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def stage_table(output_dir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((output_dir / "benchmarks").glob("sub-*/*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rows.append(
            {
                "subject": path.parent.name,
                "stage": path.stem,
                "s": float(table["s"].iloc[0]),
                "max_rss_mb": float(pd.to_numeric(table["max_rss"], errors="coerce").iloc[0]),
            }
        )
    if not rows:
        raise SystemExit(f"no benchmark tables under {output_dir / 'benchmarks'}: run the workflow")
    return pd.DataFrame(rows)


def main(argv: list[str]) -> None:
    output_dir = Path(argv[1] if len(argv) > 1 else "results")
    table = stage_table(output_dir)
    order = ["inspect", "convert", "preprocess", "perfusion", "metrics"]
    summary = table.groupby("stage").agg(
        subjects=("subject", "nunique"),
        mean_s=("s", "mean"),
        max_s=("s", "max"),
        peak_rss_mb=("max_rss_mb", "max"),
    )
    summary = summary.reindex([s for s in order if s in summary.index])
    print(summary.round(2).to_string())
    per_subject = table.groupby("subject")["s"].sum()
    print(
        f"\nper subject, all stages: mean {per_subject.mean():.1f} s, max {per_subject.max():.1f} s"
    )


if __name__ == "__main__":
    main(sys.argv)
