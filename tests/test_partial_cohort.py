"""A real cohort is partial: no TOF-MRA, reference maps without TTP, later no train subject at
all. Every model that can be trained is, on the maps the references hold; the others are
named with their reason (qc.tsv, study.md, the end-of-run summary); the study tables always
come out with every SVD method. With no train subject, a model with shipped weights
(training.source auto → pretrained) still gives every subject its maps, with no training job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bolus import paths

pytest.importorskip("torch")
pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
MODELS = ["rf", "mlp", "pix2pix"]


def run(work: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(work), "--profile", str(REPO / "profiles" / "local"), "--cores", "2"],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip


@pytest.fixture(scope="module")
def clinical_export(tmp_path_factory):
    """3 subjects (train, val, test), no TOF columns, every reference without ttp.nii.gz."""
    from bolus.simulate.cohort import simulate_cohort

    work = tmp_path_factory.mktemp("partial")
    participants = simulate_cohort(work / "cohort", 3, seed=3, matrix=(32, 32, 6), n_timepoints=32)
    table = pd.read_csv(participants, sep="\t", dtype=str, keep_default_na=False)
    table = table.drop(columns=[c for c in table.columns if c.startswith("tof")])
    table["split"] = ["train", "val", "test"]
    table.to_csv(participants, sep="\t", index=False)
    for folder in table["reference_dir"]:
        (participants.parent / folder / "ttp.nii.gz").unlink()
    config = {
        "participants": str(participants),
        "output_dir": str(work / "results"),
        "motion": {"enabled": False},
        "svd": {"methods": ["ssvd", "osvd"]},
        "models": MODELS,
        # trained on the cohort (the shipped weights would otherwise be fine-tuned: below)
        "training": {"voxels_per_subject": 1000, "device": "cpu", "source": "scratch"},
        "model_params": {"mlp": {"hidden": [16], "epochs": 1}, "rf": {"n_estimators": 3}},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run(work)
    return work, participants, proc


def test_models_train_on_the_maps_the_references_hold(clinical_export):
    work, _, proc = clinical_export
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "no subject of participants.tsv has a TOF-MRA" in proc.stderr  # said up front
    results = work / "results"
    for model in ("rf", "mlp"):
        verdict = json.loads(paths.model_verdict(results, model).read_text())
        assert verdict["status"] == "ok", verdict
        assert verdict["maps"] == ["cbf", "cbv", "mtt", "tmax"]
        assert "ttp" in verdict["reason"]
        maps = paths.SubjectPaths(results, "sub-03").maps(model)
        assert all(maps[m].exists() for m in verdict["maps"]) and not maps["ttp"].exists()


def test_a_model_that_cannot_train_is_named_with_its_reason(clinical_export):
    work, _, proc = clinical_export
    results = work / "results"
    verdict = json.loads(paths.model_verdict(results, "pix2pix").read_text())
    assert verdict["status"] == "skipped" and "TOF" in verdict["reason"]
    qc = pd.read_csv(paths.qc_table(results), sep="\t", keep_default_na=False)
    row = qc[(qc["participant_id"] == "cohort") & (qc["stage"] == "train_pix2pix")]
    assert list(row["status"]) == ["skipped"] and "TOF" in row["reason"].iloc[0]
    assert "model pix2pix skipped" in proc.stderr
    assert "pix2pix" in paths.study_markdown(results).read_text().split("Learned models not")[1]
    # a subject without a TOF-MRA gets no TOF job at all (registration, prediction)
    assert not paths.verdict(results, "sub-03", "tof").exists()
    assert not paths.verdict(results, "sub-03", "predict_pix2pix").exists()


def test_the_study_scores_every_svd_method_and_every_trained_model(clinical_export):
    work, _, _ = clinical_export
    study = pd.read_csv(paths.study_table(work / "results"), sep="\t")
    methods = set(study["method"])
    assert {"ssvd", "osvd", "rf", "mlp"} <= methods and "pix2pix" not in methods
    assert set(study.query("method == 'mlp'")["map"]) == {"cbf", "cbv", "mtt", "tmax"}
    qc = pd.read_csv(paths.qc_table(work / "results"), sep="\t", keep_default_na=False)
    subjects = qc[qc["participant_id"] != "cohort"]
    assert set(subjects["status"]) == {"ok"}


def test_a_cohort_without_train_subjects_still_gets_its_study(clinical_export):
    work, participants, _ = clinical_export
    table = pd.read_csv(participants, sep="\t", dtype=str, keep_default_na=False)
    table["split"] = "test"
    table.to_csv(participants, sep="\t", index=False)
    proc = run(work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = work / "results"
    for model in MODELS:
        verdict = json.loads(paths.model_verdict(results, model).read_text())
        assert verdict["status"] == "skipped", verdict
    reason = json.loads(paths.model_verdict(results, "mlp").read_text())["reason"]
    assert "no `train` subject" in reason
    study = pd.read_csv(paths.study_table(results), sep="\t")
    assert set(study["method"]) == {"ssvd", "osvd"}


def test_with_no_train_subject_the_shipped_weights_give_maps_without_training(clinical_export):
    """Every shipped model (mlp, talebi, talebi_truncated, stnet, transformer) gives every
    subject its maps from the package's weights: no training data, no training job."""
    from bolus.weights import shipped, verified

    work, participants, _ = clinical_export  # every subject `test` since the test above
    models = sorted(shipped())
    assert "mlp" in models
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["training"]["source"] = "auto"
    config["models"] = models
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run(work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = proc.stderr.split("Job stats:")[1].split("total")[0]
    assert "pretrained_model" in jobs
    assert "train_model" not in jobs and "training_data" not in jobs
    results = work / "results"
    study = pd.read_csv(paths.study_table(results), sep="\t")
    for model in models:
        verdict = json.loads(paths.model_verdict(results, model).read_text())
        assert verdict["status"] == "ok" and verdict["maps"] == list(shipped()[model]["maps"])
        # the study keeps the weights it used, byte for byte the shipped file
        assert paths.model_file(results, model).read_bytes() == verified(model).read_bytes()
        for subject in ("sub-01", "sub-02", "sub-03"):
            maps = paths.SubjectPaths(results, subject).maps(model)
            assert all(maps[m].exists() for m in verdict["maps"]), (model, subject)
        assert model in set(study["method"])
