"""pix2pix in bolus.learn: the TOF training layout, two-optimiser training through the one
engine, train_model (checkpoint every epoch, resume, early stopping, curves), and prediction
through predict_subject, as every model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from bolus import paths  # noqa: E402
from bolus.io.nifti import save_like  # noqa: E402
from bolus.learn.tof import MAPS, TOFData, write_tof_training_data  # noqa: E402

AFFINE = np.diag([3.0, 3.0, 5.0, 1.0])
CONFIG = {"training": {"device": "cpu", "patience": 50},
          "model_params": {"pix2pix": {"base": 4, "depth": 2, "epochs": 4, "lr": 1e-3}}}  # fmt: skip


def _subject(out, pid, shape, rng):
    """A brain, a TOF whose bright 'vessel' column marks where CBF is high, and references."""
    sp = paths.SubjectPaths(out, pid)
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 1:-1] = True
    tof = 100 + 5 * rng.random(shape)
    tof[shape[0] // 2, 3:-3, :] = 900.0
    save_like(brain.astype(np.float32), AFFINE, sp.brain_mask)
    save_like(tof, AFFINE, sp.coreg_tof)
    ref = out / "ref" / pid
    values = {"cbf": 50.0, "cbv": 4.0, "mtt": 4.8, "tmax": 1.0, "ttp": 8.0}
    for name in MAPS:
        volume = np.where(brain, values[name], np.nan)
        volume[shape[0] // 2] *= 2.0
        save_like(volume, AFFINE, ref / f"{name}.nii.gz")
    return {"participant_id": pid, "reference_dir": str(ref)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("tof_cohort")
    rng = np.random.default_rng(0)
    rows = [
        {**_subject(out, "sub-01", (14, 12, 6), rng), "split": "train"},
        {**_subject(out, "sub-02", (12, 12, 5), rng), "split": "train"},
        {**_subject(out, "sub-03", (12, 10, 6), rng), "split": "val"},
        {**_subject(out, "sub-04", (12, 12, 6), rng), "split": "test"},
    ]
    meta = write_tof_training_data(paths.tof_training_data_dir(out), out, rows)
    return out, rows, meta


def test_the_tof_layout_pads_every_subject_to_the_cohorts_largest_grid(cohort):
    out, _, meta = cohort
    data = TOFData(meta.parent)
    assert data.meta["subjects"] == ["sub-01", "sub-02", "sub-03"]  # test subject left out
    assert data.arrays["tof"].shape == (3, 14, 12, 6)
    assert data.arrays["targets"].shape == (3, 5, 14, 12, 6)
    assert list(data.rows("train")) == [0, 1] and list(data.rows("val")) == [2]
    # sub-02 is 12 × 12 × 5: padding is outside its mask, its targets NaN there
    assert not data.arrays["mask"][1, 12:].any() and not data.arrays["mask"][1, :, :, 5].any()
    assert np.isnan(data.arrays["targets"][1, 0, 12:]).all()
    # the TOF is normalised by its 99.5th percentile in the brain
    assert 0.0 <= float(np.max(data.arrays["tof"])) <= 2.0


def test_training_resumes_from_the_checkpoint_as_if_never_interrupted(cohort, tmp_path):
    from bolus.learn.train import train_model

    out, _, meta = cohort
    whole = train_model("pix2pix", meta.parent, tmp_path / "whole", CONFIG)
    interrupted = {**CONFIG, "model_params": {"pix2pix": {**CONFIG["model_params"]["pix2pix"],
                                                          "epochs": 2}}}  # fmt: skip
    train_model("pix2pix", meta.parent, tmp_path / "resumed", interrupted)  # "killed" at 2
    resumed = train_model("pix2pix", meta.parent, tmp_path / "resumed", CONFIG)
    a = torch.load(whole, weights_only=False)
    b = torch.load(resumed, weights_only=False)
    for key, value in a["state"].items():
        torch.testing.assert_close(b["state"][key], value, rtol=0, atol=0)
    curves = pd.read_csv(tmp_path / "resumed" / "curves.tsv", sep="\t")
    assert list(curves["epoch"]) == [1, 2, 3, 4]  # no epoch lost or repeated
    for name in ("curves.png", "config.yaml", "checkpoint.pt"):
        assert (tmp_path / "resumed" / name).exists()
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert len(saved["optimisers"]) == 2  # generator's and discriminator's states


def test_early_stopping_ends_training_after_patience_epochs_without_progress(cohort, tmp_path):
    from bolus.learn.train import train_model

    out, _, meta = cohort
    config = {"training": {"device": "cpu", "patience": 1},
              "model_params": {"pix2pix": {"base": 4, "depth": 2, "epochs": 30, "lr": 0.0}}}  # fmt: skip
    # lr 0 (below the schema's minimum, for this test only): the loss cannot improve
    train_model("pix2pix", meta.parent, tmp_path, config)
    assert len(pd.read_csv(tmp_path / "curves.tsv", sep="\t")) == 2


def test_prediction_writes_five_maps_in_the_subjects_native_grid(cohort, tmp_path):
    import nibabel as nib

    from bolus.learn.predict import predict_subject
    from bolus.learn.train import train_model

    out, _, meta = cohort
    model = train_model("pix2pix", meta.parent, tmp_path, CONFIG)
    sp = paths.SubjectPaths(out, "sub-04")
    wanted = [sp.map("pix2pix", m) for m in MAPS]
    written = predict_subject(model, out, "sub-04", device="cpu")
    assert [str(p) for p in written] == [str(p) for p in wanted]
    grid = nib.load(str(sp.brain_mask))
    brain = grid.get_fdata() > 0
    for path in written:
        img = nib.load(str(path))
        assert img.shape == grid.shape
        np.testing.assert_allclose(img.affine, grid.affine)
        data = img.get_fdata()
        assert np.all(data[~brain] == 0) and np.all(data >= 0) and np.isfinite(data).all()


def test_the_adversarial_training_fits_the_training_volumes(cohort, tmp_path):
    """Through the one engine, the generator's L1 (λ = 100: it dominates the generator's
    loss) falls on the training volumes, and the epoch's adversarial terms are recorded."""
    from bolus.learn.train import train_model

    out, _, meta = cohort
    config = {"training": {"device": "cpu", "patience": 50},
              "model_params": {"pix2pix": {"base": 4, "depth": 2, "epochs": 12, "lr": 1e-3}}}  # fmt: skip
    train_model("pix2pix", meta.parent, tmp_path, config)
    curves = pd.read_csv(tmp_path / "curves.tsv", sep="\t")
    assert {"g_adversarial", "d_loss"} <= set(curves.columns)
    assert curves["train_loss"].iloc[-1] < 0.6 * curves["train_loss"].iloc[0]
    assert curves["d_loss"].notna().all()
