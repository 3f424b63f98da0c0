"""On a real single-node Slurm: the tiny cohort with `snakemake --profile slurm`, as a user types it.

The cluster (munged, slurmctld, slurmd, one node with a fake GPU) is started by the project's own
.ci/slurm/cluster.sh, which installs Debian's slurm-wlm and munge when they are missing (as root)
and is stopped again at the end only if this module started it. The profile is installed into a
temporary HOME with `make install-profile`, so `--profile slurm` is found where a user's would be.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bolus import paths

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / ".ci" / "slurm" / "cluster.sh"
GPU_PROBE = REPO / "tests" / "slurm" / "gpu_probe" / "Snakefile"
SUBMITTED = re.compile(r"^Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$")
FINISHED = re.compile(r"^Finished jobid: \S+ \(Rule: (\w+)\)$")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node Slurm; stopped afterwards only if this fixture started it."""
    if os.geteuid() != 0 and shutil.which("slurmctld") is None:
        pytest.skip("Slurm is not installed and installing it needs root")
    proc = subprocess.run(
        ["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=600
    )
    if proc.returncode == 4:  # this machine has a Slurm configuration of its own: leave it be
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, f"{CLUSTER} start failed:\n{proc.stderr[-4000:]}"
    started = proc.stdout.strip().splitlines()[-1] == "started"
    yield
    if started:
        subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def slurm_home(tmp_path_factory) -> Path:
    """A fresh HOME with the profile installed the documented way."""
    home = tmp_path_factory.mktemp("home")
    subprocess.run(
        ["make", "-s", "-C", str(REPO), "install-profile", f"HOME={home}"],
        check=True,
        capture_output=True,
    )
    return home


def run_snakemake(snakefile: Path, workdir: Path, home: Path, *extra: str):
    """`snakemake --profile slurm` in ``workdir`` with the profile from ``home``; not waited for.

    Test-only flags: a 2 s first status check instead of the profile's 40 s (a job of this
    cohort takes seconds), Slurm's job logs kept for inspection."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "XDG_CONFIG"))}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    snakemake = Path(sys.executable).with_name("snakemake")
    log = open(workdir / "snakemake.log", "w")  # noqa: SIM115 (closed by the caller's wait)
    proc = subprocess.Popen(
        [
            str(snakemake if snakemake.exists() else shutil.which("snakemake")),
            "--snakefile",
            str(snakefile),
            "--profile",
            "slurm",
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--slurm-keep-successful-logs",
            *extra,
        ],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, log


def wait(proc, log, timeout=900) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = Path(log.name).read_text()
    assert proc.returncode == 0, text[-6000:]
    return text


@pytest.fixture(scope="module")
def slurm_runs(slurm_cluster, slurm_home, tmp_path_factory):
    """The GPU probe workflow and the 2-subject cohort, both submitted through Slurm at once."""
    from bolus.simulate.cohort import simulate_cohort

    probe = tmp_path_factory.mktemp("gpu_probe")
    probe_run = run_snakemake(GPU_PROBE, probe, slurm_home)

    work = tmp_path_factory.mktemp("slurm_study")
    participants = simulate_cohort(
        work / "cohort",
        3,
        seed=5,
        matrix=(32, 32, 6),
        n_timepoints=30,
        pathologies=("healthy", "stroke", "healthy"),
    )
    table = pd.read_csv(participants, sep="\t", dtype=str, keep_default_na=False)
    table["split"] = ["train", "val", "test"]
    table.to_csv(participants, sep="\t", index=False)
    # the default config (config.yaml: every learned model, the demo's epochs) with motion
    # correction off: ANTs is tested elsewhere (tests/test_workflow.py, test_motion.py); here
    # it would only lengthen the jobs whose scheduling this module checks
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    config = {
        **default,
        "participants": str(participants),
        "output_dir": "results",
        "motion": {"enabled": False},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    # preprocess on one thread here, so that both subjects' jobs fit the 2-core node together
    study_run = run_snakemake(REPO / "Snakefile", work, slurm_home, "--set-threads", "preprocess=1")
    return {
        "probe": (probe, wait(*probe_run, timeout=600)),
        "study": (work, wait(*study_run, timeout=2400)),
    }


def slurm_config(key: str) -> str:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    return next(line.split("=", 1)[1].strip() for line in out.splitlines() if line.startswith(key))


def completed_slurm_jobs() -> dict[str, dict[str, str]]:
    """Slurm's own record of finished jobs (JobCompType=jobcomp/filetxt), by job id."""
    records = {}
    for line in Path(slurm_config("JobCompLoc")).read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        records[fields["JobId"]] = fields
    return records


def executed_in(slurm_log: Path) -> list[tuple[str, str]]:
    """(rule, wildcards) of every rule run by the innermost Snakemake of one Slurm job."""
    runs, rule = [], None
    for line in slurm_log.read_text().splitlines():
        m = re.match(r"^local(?:rule|checkpoint) (\w+):$", line)
        if m:
            rule = m.group(1)
            runs.append((rule, ""))
        m = re.match(r"^\s+wildcards: (.*)$", line)
        if m and rule is not None and runs[-1] == (rule, ""):
            runs[-1] = (rule, m.group(1))
    return runs


def test_profile_installs_as_the_users_slurm_profile(slurm_home):
    installed = slurm_home / ".config" / "snakemake" / "slurm" / "config.yaml"
    assert installed.read_text() == (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    assert yaml.safe_load(installed.read_text())["executor"] == "slurm"


def test_every_job_of_the_cohort_ran_as_a_slurm_job(slurm_runs):
    work, log = slurm_runs["study"]
    submitted = [
        SUBMITTED.match(line).groups() for line in log.splitlines() if SUBMITTED.match(line)
    ]
    assert submitted, log[-4000:]
    # nothing but the target rule `all` (no action) ran on the submitting machine
    assert re.findall(r"^local(?:rule|checkpoint) (\w+):", log, flags=re.M) == ["all"]
    # Slurm itself recorded each submitted job as completed, in this working directory
    records = completed_slurm_jobs()
    for _, slurm_id, _ in submitted:
        record = records[slurm_id]
        assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", record
        assert Path(record["WorkDir"]).resolve() == work.resolve()
    # every rule Snakemake finished (bar `all`) was run inside one of those jobs
    finished = Counter(
        FINISHED.match(line).group(1) for line in log.splitlines() if FINISHED.match(line)
    )
    finished.pop("all")
    executed = [run for *_, slurm_log in submitted for run in executed_in(Path(slurm_log))]
    assert Counter(rule for rule, _ in executed) == finished
    subjects = ["sub-01", "sub-02", "sub-03"]
    for rule in ("inspect", "convert", "preprocess", "perfusion", "subject_metrics"):
        assert sorted(w for r, w in executed if r == rule) == [f"subject={s}" for s in subjects]
    assert finished["study"] == 1
    # the per-subject chain is one Slurm job per subject (the `subj` group), not one per rule
    group_jobs = [s for s in submitted if "group_subj" in s[2]]
    assert len(group_jobs) == len(subjects)
    qc = pd.read_csv(paths.qc_table(work / "results"), sep="\t")
    assert set(qc["status"]) == {"ok"}, qc  # every subject, and every model trained
    assert set(qc["participant_id"]) == {*subjects, "cohort"}
    study = pd.read_csv(paths.study_table(work / "results"), sep="\t")
    assert set(study["method"]) == set(config_models(work)) | {"ssvd", "csvd", "osvd"}


def config_models(work: Path) -> list[str]:
    return yaml.safe_load((work / "config.yaml").read_text())["models"]


def allocations(work: Path) -> dict[str, dict[str, str]]:
    """What Slurm gave each job, from the first line of every stage's log (bolus.smk)."""
    found = {}
    for log in (work / "results" / "logs").rglob("*.log"):
        first = log.read_text().split("\n", 1)[0]
        m = re.match(r"slurm job (\d+): nodes=(\S+) cpus=(\S+) gpus=(\S+)$", first)
        assert m, f"{log}: no Slurm allocation line ({first!r})"
        key = str(log.relative_to(work / "results" / "logs").with_suffix(""))
        found[key] = dict(zip(("job", "nodes", "cpus", "gpus"), m.groups(), strict=True))
    return found


def test_every_job_asks_for_one_node_and_the_model_rules_get_the_gpu(slurm_runs):
    """The default config's every learned model ran to the end on the 1-GPU node: every job
    had one node and at most one GPU, training and prediction jobs had it, others none."""
    work, _ = slurm_runs["study"]
    jobs = allocations(work)
    models = config_models(work)
    gpu_jobs = {f"models/{m}" for m in models}
    gpu_jobs |= {f"{s}/predict_{m}" for s in ("sub-01", "sub-02", "sub-03") for m in models}
    gpu_jobs -= {f"{s}/predict_rf" for s in ("sub-01", "sub-02", "sub-03")}  # a CPU model
    assert gpu_jobs <= set(jobs), sorted(gpu_jobs - set(jobs))
    for name, job in jobs.items():
        assert job["nodes"] == "1", (name, job)
        gpus = [] if job["gpus"] == "none" else job["gpus"].split(",")
        assert len(gpus) <= 1, (name, job)
        assert bool(gpus) == (name in gpu_jobs), (name, job)


def test_gpu_rules_are_submitted_with_a_gpu_request(slurm_runs):
    """The probe rule asks for `gpu: 1` in its workflow profile, as the learned-model rules do;
    inside its job Slurm shows the GPU request and hands it the node's (fake) GPU. The CPU rule
    beside it gets none."""
    probe, log = slurm_runs["probe"]
    assert len([line for line in log.splitlines() if SUBMITTED.match(line)]) == 2
    gpu = (probe / "gpu_probe.txt").read_text()
    cpu = (probe / "cpu_probe.txt").read_text()
    assert re.search(r"^SLURM_JOB_ID=\d+$", gpu, flags=re.M)
    assert re.search(r"TresPer(Job|Node|Task)=\S*gres:gpu:1", gpu), gpu
    assert re.search(r"^CUDA_VISIBLE_DEVICES=0$", gpu, flags=re.M), gpu
    assert re.search(r"^SLURM_STEP_GPUS=0$", gpu, flags=re.M), gpu
    assert re.search(r"^SLURM_JOB_ID=\d+$", cpu, flags=re.M)
    assert not re.search(r"TresPer\w+=\S*gpu|^CUDA_VISIBLE_DEVICES=|^SLURM_STEP_GPUS=", cpu, re.M)
