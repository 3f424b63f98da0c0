"""End to end: bad subjects fail alone, nothing is lost, nothing identifies a patient.

Three workflow runs on tiny simulated cohorts (32×32×6, 30 volumes, seed 11):

* ``mixed``: 2 good subjects + one subject of every kind of bad input the simulator makes
  (bolus.simulate.faults.SUBJECT_FAULTS: 14 kinds, failing at inspect, convert and metrics);
* ``clean``: the same 2 good subjects alone;
* ``resumed``: the clean cohort again, killed (SIGKILL of Snakemake and its jobs) as soon as
  the first subject is complete, then unlocked and re-run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from bolus import paths
from bolus.qc import PARTIAL_EXIT_STATUS

REPO = Path(__file__).resolve().parents[1]
SEED = 11
ACQUISITION = {"matrix": (32, 32, 6), "n_timepoints": 30}
GOOD = ("sub-01", "sub-02")

pytestmark = pytest.mark.slow


def _command(work: Path, *extra) -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    if not exe.exists():
        pytest.skip("snakemake is not installed")
    return [str(exe), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
            "--profile", str(REPO / "profiles" / "local"), "--cores", "2", *extra]  # fmt: skip


def _env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _incomplete_outputs(work: Path) -> set[Path]:
    """Outputs of the jobs Snakemake had started but not finished: its markers in
    ``.snakemake/incomplete/`` are the outputs' paths, URL-safe base64, split into path
    components of at most the file system's name length (all but the last prefixed "@")."""
    from base64 import urlsafe_b64decode

    root = work / ".snakemake" / "incomplete"
    found = set()
    for marker in root.rglob("*") if root.is_dir() else ():
        if not marker.is_file() or marker.name == "migration_underway":
            continue
        encoded = "".join(part.lstrip("@") for part in marker.relative_to(root).parts)
        path = Path(urlsafe_b64decode(encoded).decode())
        found.add((path if path.is_absolute() else work / path).resolve())
    return found


#: the verdicts a subject's last jobs leave (its metrics, its clinical readouts)
LAST_VERDICTS = ("metrics", paths.CLINICAL_VERDICT)


def _complete_subjects(work: Path) -> list[str]:
    """The subjects whose last jobs' verdicts are ok and none of whose outputs Snakemake
    marks as incomplete (a job whose script wrote its outputs but whose end Snakemake had
    not recorded is redone on resume)."""
    out = work / "results"
    running = _incomplete_outputs(work)
    done = []
    for s in GOOD:
        last = [paths.verdict(out, s, stage) for stage in LAST_VERDICTS]
        if not all(v.exists() for v in last) or any(s in str(p) for p in running):
            continue
        try:
            if all(json.loads(v.read_text())["status"] == "ok" for v in last):
                done.append(s)
        except (json.JSONDecodeError, KeyError):
            continue  # a verdict being written
    return done


def _setup(work: Path, cohort: Path) -> None:
    config = {"participants": str(cohort / "participants.tsv"), "output_dir": "results"}
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def _run(work: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(work, *extra), capture_output=True, text=True, env=_env(), timeout=1200
    )


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from bolus.simulate.cohort import simulate_cohort
    from bolus.simulate.faults import SUBJECT_FAULTS, add_faulty_subjects

    base = tmp_path_factory.mktemp("reliability")
    clean = base / "clean"
    simulate_cohort(clean / "cohort", len(GOOD), seed=SEED, **ACQUISITION)
    mixed = base / "mixed"
    shutil.copytree(clean / "cohort", mixed / "cohort")
    add_faulty_subjects(
        mixed / "cohort" / "participants.tsv", list(SUBJECT_FAULTS), seed=SEED, **ACQUISITION
    )
    resumed = base / "resumed"
    shutil.copytree(clean / "cohort", resumed / "cohort")
    result = {}
    for name, work in (("mixed", mixed), ("clean", clean)):
        _setup(work, work / "cohort")
        before = _digests(work / "cohort")
        proc = _run(work)
        result[name] = {"work": work, "proc": proc, "inputs_before": before}

    # kill the resumed run as soon as one subject is complete: every job of its own has
    # finished (metrics and clinical readouts, both of which write into its folder)
    _setup(resumed, resumed / "cohort")
    before = _digests(resumed / "cohort")
    out = resumed / "results"
    log = resumed / "first.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            _command(resumed), stdout=fh, stderr=subprocess.STDOUT, env=_env(),
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 900
        while not _complete_subjects(resumed) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        killed_while_running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # a job whose script had written its outputs when the kill came is still marked
    # incomplete and is rightly redone on resume: complete subjects are counted again now
    done = _complete_subjects(resumed)
    after_kill = {
        "killed_while_running": killed_while_running,
        "study_existed": paths.study_table(out).exists(),
        "done": done,
        "files": sorted(p for p in out.rglob("*") if p.is_file()),
        "mtimes": {
            p: p.stat().st_mtime_ns for s in done for p in (out / s).rglob("*") if p.is_file()
        },
    }
    unlock = _run(resumed, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    proc = _run(resumed)
    result["resumed"] = {"work": resumed, "proc": proc, "inputs_before": before,
                         "after_kill": after_kill}  # fmt: skip
    return result


def _qc(work: Path) -> pd.DataFrame:
    return pd.read_csv(paths.qc_table(work / "results"), sep="\t", dtype=str,
                       keep_default_na=False)  # fmt: skip


def test_the_cohort_completes_despite_one_subject_of_every_bad_kind(runs):
    proc = runs["mixed"]["proc"]
    assert proc.returncode == PARTIAL_EXIT_STATUS, proc.stderr[-4000:]
    work = runs["mixed"]["work"]
    faults = pd.read_csv(work / "cohort" / "faults.tsv", sep="\t", dtype=str, keep_default_na=False)
    n = len(GOOD) + len(faults)
    # the run says plainly how many failed and where to look
    assert f"{len(faults)} of {n} subjects failed" in proc.stderr
    assert str(Path("results") / "qc.tsv") in proc.stderr
    qc = _qc(work)
    for s in GOOD:
        rows = qc[qc["participant_id"] == s]
        assert list(rows["stage"]) == list(paths.STAGES) and set(rows["status"]) == {"ok"}
    for fault in faults.itertuples():
        rows = qc[qc["participant_id"] == fault.participant_id]
        failed = rows[rows["status"] != "ok"]
        assert len(failed) == 1, rows
        assert failed.iloc[0]["stage"] == fault.stage, (fault.fault, failed.iloc[0]["reason"])
        assert failed.iloc[0]["status"] == "failed"
        reason = failed.iloc[0]["reason"]
        assert reason.startswith(f"{fault.participant_id}: ") and fault.reason in reason
        assert (rows["status"].iloc[:-1] == "ok").all()
    excluded = pd.read_csv(paths.excluded_table(work / "results"), sep="\t")
    assert set(excluded["participant_id"]) == set(faults["participant_id"])
    assert (
        f"## Excluded subjects ({len(faults)})"
        in paths.study_markdown(work / "results").read_text()
    )


def test_good_subjects_results_equal_those_of_a_run_without_the_bad_ones(runs):
    assert runs["clean"]["proc"].returncode == 0, runs["clean"]["proc"].stderr[-4000:]
    mixed, clean = runs["mixed"]["work"] / "results", runs["clean"]["work"] / "results"
    for table in (paths.subjects_table, paths.study_table):
        assert table(mixed).read_bytes() == table(clean).read_bytes(), table(clean)
    for s in GOOD:
        for name, path in paths.SubjectPaths(clean, s).maps("osvd").items():
            other = paths.SubjectPaths(mixed, s).map("osvd", name)
            assert np.array_equal(
                nib.load(path).get_fdata(), nib.load(other).get_fdata(), equal_nan=True
            )


def test_inputs_are_never_written(runs):
    for run in runs.values():
        assert _digests(run["work"] / "cohort") == run["inputs_before"]


def test_a_killed_run_leaves_no_corrupt_file_and_resumes_without_redoing_subjects(runs):
    state = runs["resumed"]["after_kill"]
    assert state["killed_while_running"] and not state["study_existed"]
    assert state["done"], "no subject had completed when the run was killed"
    # what the kill left under an output name is whole: every NIfTI, table and JSON reads
    for path in state["files"]:
        if path.name.startswith("."):
            continue  # a temporary of the interrupted write: never an output name
        if path.name.endswith(".nii.gz"):
            np.asarray(nib.load(path).dataobj)
            gzip.decompress(path.read_bytes())
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".tsv" and "benchmarks" not in path.parts:
            pd.read_csv(path, sep="\t")
    proc = runs["resumed"]["proc"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    for path, mtime in state["mtimes"].items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone"
    out = runs["resumed"]["work"] / "results"
    assert not [p for p in out.rglob(".*.partial*")], "temporaries left behind"
    assert list(_qc(runs["resumed"]["work"])["status"]) == ["ok"] * len(GOOD) * len(paths.STAGES)


def test_two_runs_with_the_same_config_and_seed_give_identical_study_tables(runs):
    clean, resumed = runs["clean"]["work"] / "results", runs["resumed"]["work"] / "results"
    for table in (paths.subjects_table, paths.study_table, paths.study_markdown):
        assert table(clean).read_bytes() == table(resumed).read_bytes(), table(clean)


def test_no_patient_identifier_reaches_any_output_log_or_metadata(runs):
    """Searched: every byte of every file in each run's working folder except the input
    cohort, i.e. the whole output folder (maps and series decompressed in full, sidecars,
    tables, qc verdicts, logs, benchmarks, study tables) and Snakemake's own folder
    ``.snakemake/`` (its run logs and job metadata), plus what Snakemake printed."""
    from bolus.simulate.cohort import patient_identifiers
    from bolus.simulate.faults import SUBJECT_FAULTS

    n_subjects = len(GOOD) + len(SUBJECT_FAULTS)
    identifiers = set()
    for number in range(1, n_subjects + 1):
        values = patient_identifiers(SEED, number)
        identifiers.update(values.values())
        identifiers.update(p for p in values["PatientName"].split("^") if len(p) >= 4)
    assert len(identifiers) > 5 * n_subjects
    searched = 0
    for run in runs.values():
        work = run["work"]
        texts = [("snakemake stdout/stderr", run["proc"].stdout + run["proc"].stderr)]
        for path in sorted(work.rglob("*")):
            if not path.is_file() or (work / "cohort") in path.parents:
                continue
            raw = path.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            texts.append((str(path), raw.decode("latin-1")))
            searched += 1
        for where, text in texts:
            for identifier in identifiers:
                assert identifier not in text, f"{identifier!r} found in {where}"
    assert searched > 100
