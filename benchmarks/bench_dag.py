"""How long Snakemake takes to build the DAG of a large cohort (`snakemake -n`).

    python benchmarks/bench_dag.py [--subjects 1000] [--keep DIR] [--run N]

Writes a participants.tsv of N subjects (no image data: a dry run reads none) and times two dry
runs of the real Snakefile, each a fresh `snakemake -n` process (start-up and workflow parsing
included):

1. before any job ran: every subject's chain (inspect, convert, preprocess, perfusion,
   subject_metrics, subject_figures), plus `study` and the report's jobs (`inspect` is a plain
   rule, so the whole DAG is known up front);
2. after the inspections: every subject's inspection record exists (written here as `inspect`
   writes it, status ok), so the same DAG less the inspections.

Targets for 1,000 subjects, whole `snakemake -n` processes: ≤ 20 s with config.yaml's learned
models, ≤ 10 s with `models: []`.

Then the one job that reads every subject, `study`: N per-subject metric tables (the size and
columns `subject_metrics` writes, random values) aggregated by bolus.stages.study_outputs in a
fresh process, with its wall time and peak memory. It reads scalar tables only, never images.

With ``--run N [--until inspect]``: a real run of N subjects whose DICOM folders do not
exist, so every `inspect` job fails at once; it reports the CPU seconds of the Snakemake
process itself (the scheduler, not the jobs it starts). When `inspect` was a checkpoint, the
DAG showed one inspection at a time (the input functions stopped at the first subject not
yet inspected) and Snakemake re-evaluated the DAG after each, so this grew with N² and the
inspections ran one after another; as a plain rule they are all in the DAG from the start.
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


def write_cohort(root: Path, n_subjects: int, models: bool = False) -> Path:
    width = max(2, len(str(n_subjects)))
    lines = ["participant_id\tdicom_dir\tsite"]
    for i in range(1, n_subjects + 1):
        pid = f"sub-{i:0{width}d}"
        lines.append(f"{pid}\tsourcedata/{pid}/dicom\tsite{i % 4}")
    participants = root / "participants.tsv"
    participants.write_text("\n".join(lines) + "\n")
    config = {"participants": str(participants), "output_dir": str(root / "results")}
    if models:  # the repository's default config: every learned model, its model_params
        import yaml

        default = yaml.safe_load((REPO / "config.yaml").read_text())
        config.update(models=default["models"], model_params=default["model_params"])
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
    """Wall seconds and peak resident MiB of the study aggregation, in a fresh process (every
    subject's verdicts written ok first, as a finished run leaves them)."""
    from bolus import paths

    subjects = [line.split("\t")[0] for line in participants.read_text().splitlines()[1:]]
    for pid in subjects:
        for stage in paths.STAGES:
            record = {"participant_id": pid, "stage": stage, "status": "ok", "reason": ""}
            paths.verdict(root / "results", pid, stage).write_text(json.dumps(record) + "\n")
    code = (
        "import sys; from bolus.stages import study_outputs; "
        "study_outputs(sys.argv[1], sys.argv[2].split(','), sys.argv[3])"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        str(participants),
        ",".join(subjects),
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


def scheduler_run(root: Path, until: str | None = None) -> dict:
    """A real run (``--until`` a rule, if given): wall seconds, and the CPU seconds of the
    Snakemake process itself (its jobs run in child processes and are not counted)."""
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(snakemake if snakemake.exists() else shutil.which("snakemake")),
        "--snakefile", str(REPO / "Snakefile"), "--directory", str(root),
        "--configfile", str(root / "config.yaml"), "--cores", "2", "--keep-going", "--quiet",
    ] + (["--until", until] if until else [])  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=root
    )
    cpu = 0.0
    while proc.poll() is None:
        try:
            cpu = cpu_seconds(proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    stderr = proc.communicate()[1]
    if proc.returncode not in (0, 3):
        sys.exit(f"snakemake failed:\n{stderr[-3000:]}")
    done = len(list((root / "results" / "qc").glob("*_inspect.json")))
    return {"wall": time.perf_counter() - start, "cpu": cpu, "inspected": done}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="build the cohort here and keep it")
    parser.add_argument(
        "--run",
        type=int,
        metavar="N",
        help="instead: a real run of N failing inspections (scheduler CPU)",
    )
    parser.add_argument("--until", help="with --run: stop after this rule (e.g. inspect)")
    parser.add_argument(
        "--models",
        choices=("config", "none", "both"),
        default="both",
        help="plan with config.yaml's learned models, with `models: []`, or both (default)",
    )
    args = parser.parse_args(argv)
    if args.run:
        root = args.keep or Path(tempfile.mkdtemp(prefix="bench_dag_run_"))
        root.mkdir(parents=True, exist_ok=True)
        try:
            write_cohort(root, args.run)
            print(f"{args.run} subjects, Snakefile {REPO / 'Snakefile'}")
            print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            r = scheduler_run(root, args.until)
            print(f"real run of {r['inspected']} inspections: {r['wall']:.1f} s wall, "
                  f"Snakemake's own CPU {r['cpu']:.1f} s")  # fmt: skip
        finally:
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
        return
    for models in (True, False) if args.models == "both" else (args.models == "config",):
        plan(args, models)


def plan(args, models: bool):
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_dag_"))
    root.mkdir(parents=True, exist_ok=True)
    label = "config.yaml's models" if models else "models: []"
    target = 20 if models else 10
    try:
        participants = write_cohort(root, args.subjects, models)
        print(f"{args.subjects} subjects, {label}, Snakefile {REPO / 'Snakefile'}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        before = dry_run(root)
        report("before the inspections", before)
        write_inspections(root, participants)
        after = dry_run(root)
        report("after the inspections ", after)
        for rule in ("convert", "preprocess", "perfusion", "subject_metrics", "subject_figures"):
            for when, counts in (("before", before["jobs"]), ("after", after["jobs"])):
                # the report's copy of a rule (its embedded subjects) counts as that rule
                if counts.get(rule, 0) + counts.get(f"{rule}_in_report", 0) != args.subjects:
                    sys.exit(f"{when} the inspections: {counts.get(rule)} {rule} jobs, "
                             f"not {args.subjects}")  # fmt: skip
        per_subject = before["jobs"]["total"] / args.subjects
        print(f"jobs: {before['jobs']['total']} ({per_subject:.1f} per subject)")
        if not models:
            tables = write_metric_tables(root, participants)
            seconds, mib = aggregate(root, participants, tables)
            rows = sum(1 for _ in open(root / "results" / "metrics" / "subjects.tsv")) - 1
            print(
                f"study aggregation of {len(tables)} subject tables ({rows} rows): "
                f"{seconds:.1f} s, peak {mib:.0f} MiB"
            )
        slowest = max(before["total_wall"], after["total_wall"])
        verdict = "within" if slowest <= target else "OVER"
        print(f"{label}: slowest dry run {slowest:.1f} s wall, {verdict} the {target} s target\n")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
