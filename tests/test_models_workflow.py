"""End to end: the workflow trains two fast learned models on a tiny simulated cohort,
predicts every subject and scores the predictions in the study tables beside oSVD."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from bolus import paths

pytest.importorskip("torch")
pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[1]
MODELS = ["mlp", "rf"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from bolus.simulate.cohort import simulate_cohort

    work = tmp_path_factory.mktemp("models_study")
    participants = simulate_cohort(work / "cohort", 3, seed=11, matrix=(40, 40, 6), n_timepoints=40)
    config = {
        "participants": str(participants),
        "output_dir": str(work / "results"),
        "motion": {"enabled": False},
        "svd": {"methods": ["osvd"]},
        "models": MODELS,
        "training": {"epochs": 2, "voxels_per_subject": 1500, "device": "cpu"},
        "model_params": {"mlp": {"hidden": [32], "epochs": 2}, "rf": {"n_estimators": 5}},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    if not snakemake.exists():
        pytest.skip("snakemake is not installed")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(snakemake), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
         "--profile", str(REPO / "profiles" / "local"), "--cores", "2"],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work, pd.read_csv(participants, sep="\t")


def test_every_model_is_trained_with_curves_and_config(finished):
    work, _ = finished
    for model in MODELS:
        folder = paths.model_dir(work / "results", model)
        for name in ("model.pt", "curves.tsv", "curves.png", "config.yaml"):
            assert (folder / name).exists(), f"{model}: {name}"


def test_every_subject_has_the_models_maps_in_its_native_grid(finished):
    work, participants = finished
    for pid in participants["participant_id"]:
        sp = paths.SubjectPaths(work / "results", pid)
        grid = nib.load(str(sp.map("osvd", "cbf")))
        for model in MODELS:
            for name in paths.MAPS:  # both baselines predict every map
                img = nib.load(str(sp.map(model, name)))
                assert img.shape == grid.shape
                np.testing.assert_allclose(img.affine, grid.affine)


def test_study_table_scores_the_models_beside_osvd(finished):
    work, _ = finished
    study = pd.read_csv(paths.study_table(work / "results"), sep="\t")
    for method in ["osvd", *MODELS]:
        rows = study[(study["method"] == method) & (study["map"] == "cbf")]
        assert not rows.empty, method
        nrmse = rows[(rows["metric"] == "nrmse") & (rows["region"] == "brain")]["median"]
        # trained for two epochs on two subjects: far from perfect, but a CBF map, not noise
        assert float(nrmse.iloc[0]) < 1.0, method


def test_study_tables_score_the_held_out_test_subjects_only(finished):
    work, participants = finished
    test = set(participants.loc[participants["split"] == "test", "participant_id"])
    subjects = pd.read_csv(paths.subjects_table(work / "results"), sep="\t")
    assert set(subjects["participant_id"]) == set(participants["participant_id"])  # all kept
    assert test and set(subjects.loc[subjects["split"] == "test", "participant_id"]) == test
    study = pd.read_csv(paths.study_table(work / "results"), sep="\t")
    assert (study["n"] <= len(test)).all()  # oSVD and the models alike, on the test subjects
    assert "held-out `test` subjects" in paths.study_markdown(work / "results").read_text()
