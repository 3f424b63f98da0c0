"""An edit reruns exactly the jobs that read it: `snakemake -n` after each edit of a finished
cohort (3 subjects, two SVD methods and one learned model) plans the jobs listed here, and no
other. Each rule's params carry only the config keys and the subject's row columns its job
reads (rules/common.smk); user data are inputs or, for DICOM folders, a fingerprint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: the cohort-wide jobs after the subjects' metrics (the study tables and the report's)
STUDY = {("study", ""), ("study_figures", ""), ("report_tables", ""), ("all", "")}
#: the cohort-wide clinical jobs, after every subject's readouts
CLINICAL = {("clinical_study", ""), ("clinical_report_table", "")}
SUBJECTS = ("sub-01", "sub-02", "sub-03")


def snakemake_executable() -> str:
    found = Path(sys.executable).with_name("snakemake")
    return str(found) if found.exists() else shutil.which("snakemake") or "snakemake"


def snakemake(work: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [snakemake_executable(), "--snakefile", str(REPO / "Snakefile"), "--directory",
         str(work), "--profile", str(REPO / "profiles" / "local"), "--cores", "2", *extra],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip


def planned(work: Path) -> set[tuple[str, str]]:
    """(rule, the subject or method it runs for) of every job `snakemake -n` plans."""
    proc = snakemake(work, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs, rule, label = set(), None, ""
    for line in proc.stdout.splitlines() + ["rule end:"]:
        head = re.match(r"\s*(?:local)?rule (\w+):$", line)
        if head:  # a job's block starts (grouped jobs' blocks are indented)
            if rule is not None:
                jobs.add((rule, label))
            # the report's copy of a per-subject rule (its embedded subjects) is that rule
            rule, label = head.group(1).removesuffix("_in_report"), ""
        wildcards = re.match(r"\s*wildcards: (.*)$", line)
        if wildcards and rule is not None:
            values = dict(kv.split("=", 1) for kv in wildcards.group(1).split(", "))
            label = "/".join(values[k] for k in ("subject", "method", "model") if k in values)
    return jobs


def per_subject(rules, subjects=SUBJECTS, method=None) -> set[tuple[str, str]]:
    return {(r, f"{s}/{method}" if method else s) for r in rules for s in subjects}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from bolus.simulate.cohort import simulate_cohort

    work = tmp_path_factory.mktemp("rerun")
    participants = simulate_cohort(work / "cohort", 3, seed=5, matrix=(40, 40, 6), n_timepoints=36)
    table = pd.read_csv(participants, sep="\t", dtype=str, keep_default_na=False)
    table["split"] = ["train", "val", "test"]  # sub-03 is the held-out subject
    table = table.drop(columns=[c for c in table.columns if c.startswith("tof")])
    table.to_csv(participants, sep="\t", index=False)
    config = {
        "participants": str(participants),
        "output_dir": str(work / "results"),
        "svd": {"methods": ["ssvd", "osvd"]},
        "models": ["mlp"],
        "model_params": {"mlp": {"epochs": 1, "hidden": [16]}},
        "study": {"subjects": "all"},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert planned(work) == set(), "a finished cohort plans nothing"
    return work, config


def edited(work: Path, config: dict, change) -> set[tuple[str, str]]:
    """The jobs planned after ``change(config)``; the config is restored afterwards."""
    import copy

    new = copy.deepcopy(config)
    change(new)
    (work / "config.yaml").write_text(yaml.safe_dump(new))
    try:
        return planned(work)
    finally:
        (work / "config.yaml").write_text(yaml.safe_dump(config))


def test_table_options_rerun_the_study_tables_only(finished):
    work, config = finished
    assert (
        edited(work, config, lambda c: c.update(study={"subjects": "all", "strata": ["site"]}))
        == STUDY
    )
    assert edited(work, config, lambda c: c["study"].update(baseline="ssvd")) == STUDY


def test_the_lesion_threshold_reruns_metrics_figures_and_study(finished):
    work, config = finished
    jobs = edited(work, config, lambda c: c.update(lesion={"tmax_threshold_s": 8.0}))
    # the subjects' clinical readouts have thresholds of their own (config section
    # `clinical`); the cohort's clinical table is redone: it keeps the subjects whose metrics
    # completed
    assert jobs == per_subject(("subject_metrics", "subject_figures")) | STUDY | CLINICAL


def test_an_svd_option_reruns_that_method_and_what_reads_it(finished):
    work, config = finished
    jobs = edited(work, config, lambda c: c["svd"].update(osvd_oscillation_index=0.05))
    scored = per_subject(("subject_metrics", "subject_figures", "clinical")) | STUDY | CLINICAL
    assert jobs == per_subject(["svd_maps"], method="osvd") | scored
    jobs = edited(work, config, lambda c: c["svd"].update(methods=["ssvd", "osvd", "csvd"]))
    assert jobs == per_subject(["svd_maps"], method="csvd") | scored


def test_a_model_option_retrains_that_model_only(finished):
    work, config = finished
    jobs = edited(work, config, lambda c: c["model_params"]["mlp"].update(epochs=2))
    assert jobs == (
        {("train_model", "mlp")}
        | per_subject(("predict_mlp", "subject_metrics", "subject_figures", "clinical"))
        | STUDY
        | CLINICAL
    )


def test_motion_correction_reruns_from_preprocessing_on(finished):
    work, config = finished
    jobs = edited(work, config, lambda c: c.update(motion={"enabled": False}))
    rules = {rule for rule, _ in jobs}
    assert not rules & {"inspect", "convert"}
    assert {"preprocess", "perfusion", "svd_maps", "training_data", "train_model"} <= rules
    assert per_subject(["preprocess"]) <= jobs


def test_one_subjects_data_rerun_that_subject_alone(finished):
    work, config = finished
    participants = Path(config["participants"])
    original = participants.read_text()
    table = pd.read_csv(participants, sep="\t", dtype=str, keep_default_na=False)
    after_metrics = {(r, "sub-03") for r in ("subject_metrics", "subject_figures", "clinical")}
    after_metrics |= STUDY | CLINICAL
    chain = {(r, "sub-03") for r in ("inspect", "convert", "preprocess", "perfusion")}
    chain |= {("svd_maps", "sub-03/ssvd"), ("svd_maps", "sub-03/osvd"), ("predict_mlp", "sub-03")}
    try:
        # the DICOM folder moved (another path, the same export)
        source = work / "cohort" / table.loc[2, "dicom_dir"]
        moved = source.parent / "dicom_moved"
        shutil.copytree(source, moved)
        table.loc[2, "dicom_dir"] = str(moved)
        table.to_csv(participants, sep="\t", index=False)
        assert planned(work) == chain | after_metrics
        participants.write_text(original)
        # the export replaced in place: same file names, new content
        assert planned(work) == set()
        first = sorted(p for p in source.rglob("*") if p.is_file())[0]
        stat = first.stat()
        time.sleep(0.01)
        first.write_bytes(first.read_bytes())
        assert planned(work) == chain | after_metrics
        os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert planned(work) == set()
    finally:
        participants.write_text(original)


def test_a_replaced_reference_map_rescores_that_subject(finished):
    """A new reference CBF (other values; Snakemake compares the content of a newer input
    with the checksum it recorded, so a mere touch reruns nothing)."""
    import nibabel as nib

    work, config = finished
    reference = work / "cohort" / "sourcedata" / "sub-03" / "truth" / "cbf.nii.gz"
    original, stat = reference.read_bytes(), reference.stat()
    try:
        image = nib.load(reference)
        nib.save(nib.Nifti1Image(image.get_fdata() * 1.1, image.affine), reference)
        jobs = planned(work)
        rescored = {(r, "sub-03") for r in ("subject_metrics", "subject_figures", "clinical")}
        assert jobs == rescored | STUDY | CLINICAL
    finally:
        reference.write_bytes(original)
        os.utime(reference, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_new_subject_runs_alone(finished):
    work, config = finished
    participants = Path(config["participants"])
    original = participants.read_text()
    table = pd.read_csv(participants, sep="\t", dtype=str, keep_default_na=False)
    row = table.iloc[[2]].copy()
    row["participant_id"] = "sub-04"
    try:
        pd.concat([table, row]).to_csv(participants, sep="\t", index=False)
        jobs = planned(work)
        subject = {(r, s) for r, s in jobs if s.startswith("sub-04")}
        assert jobs == subject | STUDY | CLINICAL
        assert {r for r, _ in subject} == {
            "inspect", "convert", "preprocess", "perfusion", "svd_maps", "predict_mlp",
            "subject_metrics", "subject_figures", "clinical",
        }  # fmt: skip
    finally:
        participants.write_text(original)


def test_the_model_verdict_names_the_maps_it_learned(finished):
    """The model verdict says ok, and every map it learned exists (this cohort has them all)."""
    import json

    from bolus import paths

    work, _ = finished
    verdict = json.loads(paths.model_verdict(work / "results", "mlp").read_text())
    assert verdict["status"] == "ok" and verdict["maps"] == ["cbf", "cbv", "mtt", "tmax", "ttp"]
    maps = paths.SubjectPaths(work / "results", "sub-03").maps("mlp")
    assert np.all([p.exists() for p in maps.values()])
