"""Optional k-fold learning-rate search (config ``training.lr_search``): folds of whole train
subjects, the lowest mean held-out loss wins, ``lr_search.tsv`` beside the model.

The data are a hand-built voxel layout (the format of :mod:`bolus.learn.datasets`) of
indicator-dilution curves, C(t) = CBF · (AIF ⊛ exp(−t/MTT)), so the test needs no pipeline
run and stays within seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")

from bolus.learn import datasets  # noqa: E402
from bolus.learn.lr_search import LR_SEARCH_TSV, subject_folds  # noqa: E402

N_T, PER_SUBJECT = 24, 300
SPLITS = ["train", "train", "train", "val"]


def voxel_layout(folder) -> None:
    """Four subjects (three train, one val) of gamma-variate AIFs and exponential residues."""
    rng = np.random.default_rng(0)
    t = np.arange(N_T, dtype=np.float64)
    curves, targets, subject, aifs = [], [], [], []
    for i, _ in enumerate(SPLITS):
        arrival = 3 + i
        shifted = np.clip(t - arrival, 0, None)
        aif = shifted**3 * np.exp(-shifted / 1.5)
        aif = 10 * aif / aif.sum()
        cbf = rng.uniform(10, 80, PER_SUBJECT)  # ml/100 g/min
        mtt = rng.uniform(2, 8, PER_SUBJECT)  # s
        residue = np.exp(-t[None, :] / mtt[:, None])
        conv = np.array([np.convolve(aif, r)[:N_T] for r in residue])
        curves.append(cbf[:, None] / 60 * conv + rng.normal(0, 0.02, (PER_SUBJECT, N_T)))
        maps = np.full((PER_SUBJECT, len(datasets.MAPS)), np.nan)
        maps[:, datasets.MAPS.index("cbf")] = cbf
        maps[:, datasets.MAPS.index("cbv")] = cbf * mtt / 60
        maps[:, datasets.MAPS.index("mtt")] = mtt
        maps[:, datasets.MAPS.index("tmax")] = 1.0
        maps[:, datasets.MAPS.index("ttp")] = arrival + 2.0
        targets.append(maps)
        subject.append(np.full(PER_SUBJECT, i))
        aifs.append(aif)
    vox = folder / "voxels"
    vox.mkdir(parents=True)
    codes = np.repeat([datasets.SPLIT_CODES[s] for s in SPLITS], PER_SUBJECT)
    arrays = {
        "curves": np.concatenate(curves),
        "targets": np.concatenate(targets),
        "subject": np.concatenate(subject),
        "lesion": np.zeros(len(codes), bool),
        "split": codes,
        "aifs": np.array(aifs),
    }
    dtypes = {"subject": np.int32, "split": np.uint8, "lesion": np.bool_}
    for name, array in arrays.items():
        np.save(vox / f"{name}.npy", array.astype(dtypes.get(name, np.float32)))
    meta = {"times_s": t.tolist(), "maps": list(datasets.MAPS),
            "subjects": [f"sub-0{i + 1}" for i in range(len(SPLITS))], "splits": SPLITS}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lr_search") / "data"
    voxel_layout(folder)
    return folder


def config(**search):
    return {
        "participants": "x",
        "seed": 5,
        "training": {"device": "cpu", "batch_size": 32, "epochs": 2,
                     "lr_search": {"enabled": True, "folds": 3, "epochs": 3, **search}},
        "model_params": {"mlp": {"hidden": [32], "epochs": 2}},
    }  # fmt: skip


def test_folds_are_whole_train_subjects(data_dir):
    data = datasets.open_layout(data_dir, "voxels")
    subjects = np.asarray(data["subject"])[data.rows("train")]
    folds = subject_folds(data, 5)  # five asked, three train subjects: three folds
    assert len(folds) == 3
    assert [set(subjects[f]) for f in folds] == [{0}, {1}, {2}]
    assert not np.any(np.asarray(data["split"])[data.rows("train")[folds[0]]])  # never val


def test_the_search_picks_the_rate_that_learns_and_training_uses_it(data_dir, tmp_path):
    from bolus.learn.train import train_model

    # 1e-7 cannot move the weights in three epochs; 3e-3 can: the search must tell them apart
    model_dir = tmp_path / "mlp"
    train_model("mlp", data_dir, model_dir, config(candidates=[1e-7, 3e-3]), threads=1)
    table = pd.read_csv(model_dir / LR_SEARCH_TSV, sep="\t", dtype={"fold": str})
    assert list(table.columns) == ["lr", "fold", "val_loss", "epochs", "seconds"]
    folds = table[table["fold"] != "mean"]
    assert sorted(folds["fold"].unique()) == ["1", "2", "3"] and len(folds) == 6
    means = table[table["fold"] == "mean"].set_index("lr")["val_loss"]
    np.testing.assert_allclose(means.to_numpy(), folds.groupby("lr")["val_loss"].mean(), rtol=1e-5)
    assert means[3e-3] < 0.8 * means[1e-7]

    saved = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert saved["params"]["lr"] == pytest.approx(3e-3)
    record = torch.load(model_dir / "model.pt", weights_only=False)
    assert record["params"]["lr"] == pytest.approx(3e-3)
    checkpoint = torch.load(model_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["optimisers"][0]["param_groups"][0]["lr"] == pytest.approx(3e-3)


def test_a_finished_search_is_not_repeated_and_the_search_is_off_by_default(
    data_dir, tmp_path, monkeypatch
):
    from bolus.learn import lr_search
    from bolus.learn.train import train_model

    model_dir = tmp_path / "mlp"
    model_dir.mkdir()
    rows = [(lr, f, v, 3, 0.1) for lr, v in ((1e-4, 0.9), (1e-2, 0.4)) for f in ("1", "2", "3")]
    rows += [(1e-4, "mean", 0.9, 3, 0.3), (1e-2, "mean", 0.4, 3, 0.3)]
    pd.DataFrame(rows, columns=list(lr_search.COLUMNS)).to_csv(
        model_dir / LR_SEARCH_TSV, sep="\t", index=False
    )

    def no_search(*args, **kwargs):
        raise AssertionError("the finished search was run again")

    monkeypatch.setattr(lr_search, "_fold_loss", no_search)
    train_model("mlp", data_dir, model_dir, config(candidates=[1e-4, 1e-2]), threads=1)
    assert yaml.safe_load((model_dir / "config.yaml").read_text())["params"]["lr"] == 1e-2

    plain = tmp_path / "plain"
    off = config()
    del off["training"]["lr_search"]
    train_model("mlp", data_dir, plain, off, threads=1)
    assert not (plain / LR_SEARCH_TSV).exists()
    assert yaml.safe_load((plain / "config.yaml").read_text())["params"]["lr"] == 0.001
