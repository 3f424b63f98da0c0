"""End to end: `models: [pix2pix]` converts each subject's TOF-MRA DICOM, registers it onto
the DSC grid, trains the 3D pix2pix (two optimisers) on the train subjects, predicts every
subject's five maps in its native grid and scores them in the study tables beside oSVD."""

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

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from bolus.simulate.cohort import simulate_cohort

    work = tmp_path_factory.mktemp("pix2pix_study")
    participants = simulate_cohort(work / "cohort", 3, seed=11, matrix=(40, 40, 6), n_timepoints=30)
    table = pd.read_csv(participants, sep="\t")
    table.loc[table.index[-1], "tof_nifti"] = np.nan  # the last subject: TOF from DICOM only
    table.to_csv(participants, sep="\t", index=False)
    config = {
        "participants": str(participants),
        "output_dir": str(work / "results"),
        "motion": {"enabled": False},
        "svd": {"methods": ["osvd"]},
        "models": ["pix2pix"],
        "training": {"device": "cpu"},
        "model_params": {"pix2pix": {"epochs": 2, "base": 8}},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    if not snakemake.exists():
        pytest.skip("snakemake is not installed")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(snakemake), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
         "--profile", str(REPO / "profiles" / "local"), "--cores", "2",
         str(paths.study_table(work / "results"))],  # the tables: no figures or report
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work, pd.read_csv(participants, sep="\t")


def test_pix2pix_is_trained_with_curves_checkpoint_and_config(finished):
    work, _ = finished
    folder = paths.model_dir(work / "results", "pix2pix")
    for name in ("model.pt", "checkpoint.pt", "curves.tsv", "curves.png", "config.yaml"):
        assert (folder / name).exists(), name
    curves = pd.read_csv(folder / "curves.tsv", sep="\t")
    assert list(curves["epoch"]) == [1, 2]
    assert {"train_loss", "val_loss", "d_loss", "g_adversarial"} <= set(curves.columns)
    assert np.isfinite(curves[["train_loss", "val_loss", "d_loss"]].to_numpy()).all()


def test_each_subjects_tof_is_converted_registered_and_free_of_identifiers(finished):
    from bolus.simulate.cohort import patient_identifiers

    work, participants = finished
    for number, pid in enumerate(participants["participant_id"], start=1):
        sp = paths.SubjectPaths(work / "results", pid)
        grid = nib.load(str(sp.brain_mask))
        own = nib.load(str(sp.tof))  # converted by dcm2niix: the TOF's own, finer grid
        assert own.header.get_zooms()[0] < grid.header.get_zooms()[0]
        coreg = nib.load(str(sp.coreg_tof))
        assert coreg.shape == grid.shape
        np.testing.assert_allclose(coreg.affine, grid.affine)
        text = sp.tof_json.read_text() + str(own.header)
        for value in patient_identifiers(11, number).values():
            assert value not in text


def test_every_subject_has_pix2pix_maps_scored_beside_osvd(finished):
    work, participants = finished
    for pid in participants["participant_id"]:
        sp = paths.SubjectPaths(work / "results", pid)
        grid = nib.load(str(sp.map("osvd", "cbf")))
        for name in paths.MAPS:
            img = nib.load(str(sp.map("pix2pix", name)))
            assert img.shape == grid.shape
            np.testing.assert_allclose(img.affine, grid.affine)
            assert np.isfinite(img.get_fdata()).all() and img.get_fdata().min() >= 0
    # with learned models the study tables score the held-out `test` subjects (study.subjects)
    n_test = int((participants["split"] == "test").sum())
    assert n_test >= 1
    study = pd.read_csv(paths.study_table(work / "results"), sep="\t")
    for name in paths.MAPS:
        rows = study[(study["method"] == "pix2pix") & (study["map"] == name)]
        assert not rows.empty, name
        assert rows["n"].max() == n_test
