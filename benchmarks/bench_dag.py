"""How long Snakemake takes to build the DAG of a large cohort (`snakemake -n`).

    python benchmarks/bench_dag.py [--subjects 1000] [--keep DIR]

Writes a participants.tsv of N subjects (no image data: a dry run reads none) and times two dry
runs of the real Snakefile, each a fresh `snakemake -n` process (start-up and workflow parsing
included):

1. before any job ran: the DAG holds one `inspect` checkpoint per subject, plus `study`, which
   cannot see past the checkpoints yet;
2. after the checkpoints: every subject's inspection record exists (written here as `inspect`
   writes it, status ok), so the dry run builds the whole DAG, N × (convert, preprocess,
   perfusion, subject_metrics) in one `subj` group per subject, plus `study`.

The target (issue 7): ≤ 20 s for 1,000 subjects.

Then the one job that reads every subject, `study`: N per-subject metric tables (the size and
columns `subject_metrics` writes, random values) aggregated by bolus.stages.study_outputs in a
fresh process, with its wall time and peak memory. It reads scalar tables only, never images.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_cohort(root: Path, n_subjects: int) -> Path:
    width = max(2, len(str(n_subjects)))
    lines = ["participant_id\tdicom_dir\tsite"]
    for i in range(1, n_subjects + 1):
        pid = f"sub-{i:0{width}d}"
        lines.append(f"{pid}\tsourcedata/{pid}/dicom\tsite{i % 4}")
    participants = root / "participants.tsv"
    participants.write_text("\n".join(lines) + "\n")
    config = {"participants": str(participants), "output_dir": str(root / "results")}
    (root / "config.yaml").write_text(json.dumps(config))
    return participants


def write_inspections(root: Path, participants: Path):
    """The records `inspect` writes (bolus.stages.inspect_subject) for a usable subject."""
    qc = root / "results" / "qc"
    qc.mkdir(parents=True, exist_ok=True)
    for line in participants.read_text().splitlines()[1:]:
        pid = line.split("\t")[0]
        record = {"participant_id": pid, "stage": "inspect", "status": "ok", "reason": ""}
        (qc / f"{pid}_inspect.json").write_text(json.dumps(record) + "\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dry_run(root: Path) -> dict:
    """One `snakemake -n`, timed twice: when the DAG is built (Snakemake prints its job stats)
    and when the dry run has listed every job. Wall and CPU seconds; the CPU time is what the
    wall time would be on an idle machine (the DAG is built in one thread)."""
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(snakemake if snakemake.exists() else shutil.which("snakemake")),
        "-n",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(root),
        "--configfile",
        str(root / "config.yaml"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=root
    )
    result, lines = {}, []
    for line in proc.stdout:
        if line.startswith("Job stats:") and "dag_wall" not in result:
            result.update(dag_wall=time.perf_counter() - start, dag_cpu=cpu_seconds(proc.pid))
        if "dag_wall" in result and "total_wall" not in result and "dry-run" in line:
            result.update(total_wall=time.perf_counter() - start, total_cpu=cpu_seconds(proc.pid))
        lines.append(line)
    proc.wait()
    output = "".join(lines)
    if proc.returncode != 0 or "dag_wall" not in result:
        sys.exit(f"snakemake -n failed:\n{output[-3000:]}")
    result.setdefault("total_wall", time.perf_counter() - start)
    result.setdefault("total_cpu", result["dag_cpu"])
    stats = output.split("Job stats:")[1].split("\n\n")[0]
    result["jobs"] = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}
    return result


def report(label: str, r: dict):
    print(
        f"{label}: DAG built in {r['dag_wall']:5.1f} s wall, {r['dag_cpu']:5.1f} s CPU; "
        f"dry run listed every job at {r['total_wall']:5.1f} s wall, {r['total_cpu']:5.1f} s CPU"
    )
    print(f"  jobs: {r['jobs']}")


def write_metric_tables(root: Path, participants: Path, seed: int = 0) -> list[Path]:
    """One metrics table per subject, as `subject_metrics` writes it (3 methods × 5 maps ×
    7 brain metrics + 5 lesion metrics of Tmax: 120 rows)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = [
        (method, name, "brain", metric)
        for method in ("ssvd", "csvd", "osvd")
        for name in ("cbf", "cbv", "mtt", "tmax", "ttp")
        for metric in ("mae", "rmse", "nrmse", "ssim", "psnr", "pcc", "finite_fraction")
    ]
    rows += [
        (method, "tmax", "brain", metric)
        for method in ("ssvd", "csvd", "osvd")
        for metric in ("dice", "iou", "hd95", "volume_pred_ml", "volume_ref_ml")
    ]
    tables = []
    for line in participants.read_text().splitlines()[1:]:
        pid = line.split("\t")[0]
        path = root / "results" / pid / "perf" / f"{pid}_metrics.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        values = rng.random(len(rows))
        body = "".join(
            f"{pid}\t" + "\t".join(r) + f"\t{v:.6g}\n" for r, v in zip(rows, values, strict=True)
        )
        path.write_text("participant_id\tmethod\tmap\tregion\tmetric\tvalue\n" + body)
        tables.append(path)
    return tables


def aggregate(root: Path, participants: Path, tables: list[Path]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of the study aggregation, in a fresh process."""
    inspections = sorted((root / "results" / "qc").glob("*_inspect.json"))
    code = (
        "import sys; from bolus.stages import study_outputs; "
        "study_outputs(sys.argv[1], sys.argv[2].split(','), sys.argv[3].split(','), sys.argv[4])"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        str(participants),
        ",".join(map(str, inspections)),
        ",".join(map(str, tables)),
        str(root / "results"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # the child's own peak, via `time -v` semantics: ru_maxrss of the waited-for children
    script = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *cmd], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        sys.exit(f"study aggregation failed:\n{out.stderr[-3000:]}")
    seconds, max_rss_kib = out.stdout.split()
    return float(seconds), int(max_rss_kib) / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="build the cohort here and keep it")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_dag_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        participants = write_cohort(root, args.subjects)
        print(f"{args.subjects} subjects, Snakefile {REPO / 'Snakefile'}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        before = dry_run(root)
        report("before the checkpoints", before)
        write_inspections(root, participants)
        after = dry_run(root)
        report("after the checkpoints ", after)
        counts = after["jobs"]
        expected = 4 * args.subjects + 1
        total = sum(v for k, v in counts.items() if k not in ("total", "all"))
        if total != expected:
            sys.exit(f"expected {expected} jobs after the checkpoints, the dry run has {total}")
        tables = write_metric_tables(root, participants)
        seconds, mib = aggregate(root, participants, tables)
        rows = sum(1 for _ in open(root / "results" / "metrics" / "subjects.tsv")) - 1
        print(
            f"study aggregation of {len(tables)} subject tables ({rows} rows): "
            f"{seconds:.1f} s, peak {mib:.0f} MiB"
        )
        slowest = max(before["dag_cpu"], after["dag_cpu"])
        verdict = "within" if slowest <= 20 else "OVER"
        print(f"slowest DAG build: {slowest:.1f} s of CPU, {verdict} the 20 s target")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
