"""Learned models: training data, networks, losses, checkpoints/resume and prediction.

The cohort here skips conversion and ANTs: the simulator's series is written where the
pipeline puts the motion-corrected series (no motion simulated), the truth brain is the
mask, and the real perfusion stage computes concentration and AIF. Grids are tiny and
networks small so the whole module stays within a minute or two on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bolus import paths  # noqa: E402
from bolus.config import PerfusionConstants  # noqa: E402
from bolus.learn import datasets  # noqa: E402
from bolus.models import MODELS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_T = 30
TINY = {
    "training": {"epochs": 2, "batch_size": 256, "voxels_per_subject": 1500, "device": "cpu"},
    "model_params": {
        "mlp": {"hidden": [32], "epochs": 2},
        "rf": {"n_estimators": 5, "max_depth": 6},
        "talebi": {"temporal_channels": [4, 8], "base_channels": 8, "depth": 1, "epochs": 1},
        "talebi_truncated": {
            "temporal_channels": [4, 8], "base_channels": 8, "depth": 1, "epochs": 1, "frames": 20,
        },
        "stnet": {"spatial_channels": [4, 8, 8, 16], "width": 8, "voxels_per_slice": 64, "epochs": 1},
        "transformer": {"d_model": 16, "heads": 4, "layers": 1, "feedforward": 32,
                        "pretrain_curves": 200, "pretrain_epochs": 1, "epochs": 1},
    },
}  # fmt: skip


def write_pipeline_outputs(out_dir, pid, sim) -> None:
    """What convert/preprocess would leave for ``sim`` (no motion), then the real
    perfusion stage (concentration, automatic AIF, SVD maps)."""
    from bolus.io.nifti import save_like
    from bolus.stages import perfusion_and_maps

    sp = paths.SubjectPaths(out_dir, pid)
    affine = sim.phantom.grid.affine_ras
    save_like(sim.signal, affine, sp.mc_dsc)
    sp.dsc_json.write_text(json.dumps({"VolumeTiming": sim.time_s.tolist(), "EchoTime": sim.te_s}))
    save_like(sim.truth["brain"] > 0, affine, sp.brain_mask, dtype=np.uint8)
    perfusion_and_maps(sp, {"svd": {"methods": ["osvd"]}})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three subjects (healthy train, stroke train, tumour test) through the perfusion stage."""
    from bolus.simulate.cohort import simulate_subject, write_truth

    work = tmp_path_factory.mktemp("learn")
    out = work / "results"
    rows = []
    for n, (pathology, split) in enumerate(
        [("healthy", "train"), ("stroke", "train"), ("tumour", "test")], start=1
    ):
        pid = f"sub-0{n}"
        sim = simulate_subject(5, n, pathology, matrix=(32, 32, 6), n_timepoints=N_T)
        write_truth(work / "truth" / pid, sim)
        write_pipeline_outputs(out, pid, sim)
        rows.append(
            {"participant_id": pid, "split": split, "reference_dir": str(work / "truth" / pid)}
        )
    data = paths.training_data_dir(out)
    datasets.write_training_data(
        data, out, rows, voxels_per_subject=1500, tmax_threshold_s=6.0, seed=3
    )
    return {"work": work, "out": out, "rows": rows, "data": data}


def config_for(model=None, **training):
    config = {"participants": "x", "seed": 3, **json.loads(json.dumps(TINY))}
    config["training"].update(training)
    return config


# ----------------------------------------------------------------------------- data
def test_training_data_is_written_once_per_cohort_as_memory_maps(cohort):
    meta = json.loads((cohort["data"] / "meta.json").read_text())
    assert meta["subjects"] == ["sub-01", "sub-02"]  # the test subject is never trained on
    assert len(meta["times_s"]) == N_T
    voxels = datasets.VoxelData(cohort["data"])
    assert isinstance(voxels["curves"], np.memmap)
    n = meta["n_voxels"]
    assert voxels["curves"].shape == (n, N_T) and voxels["targets"].shape == (n, 5)
    assert n <= 2 * 1500
    # the stroke subject's lesion (reference Tmax > 6 s) is flagged, the healthy one has none
    lesion, subject = np.asarray(voxels["lesion"]), np.asarray(voxels["subject"])
    assert lesion[subject == 1].any() and not lesion[subject == 0].any()
    slices = datasets.SliceData(cohort["data"])
    k = meta["n_slices"]
    assert slices["curves"].shape == (k, N_T, 32, 32)
    assert slices["targets"].shape == (k, 5, 32, 32)
    # no val subject: every 5th training row is held out, disjoint from the training rows
    train, val = voxels.rows("train"), voxels.rows("val")
    assert val.size and not set(train) & set(val) and train.size + val.size == n


def test_cbv_is_the_area_ratio_of_the_normalised_curves():
    """model_inputs divides by the AIF area: ∫curve·k_H/ρ is then CBV in ml/100 g, exactly
    (a tissue curve that is the AIF scaled by s has CBV = 100·k_H/ρ·s)."""
    constants = PerfusionConstants.from_config()
    t = np.arange(40) * 1.5
    aif = np.exp(-((t - 15.0) ** 2) / 20.0) * 30.0
    scale = np.array([0.01, 0.04]).reshape(2, 1, 1)
    subject = datasets.SubjectSeries(
        "sub-01", (scale * aif).astype(np.float32), t, aif, np.ones((2, 1, 1), bool),
        np.ones((2, 1, 1), np.float32), np.eye(4),
    )  # fmt: skip
    curves, norm_aif, _ = datasets.model_inputs(subject, t)
    cbv = constants.kh / constants.density_g_ml * np.trapezoid(curves, t, axis=-1)
    np.testing.assert_allclose(
        cbv.ravel(), 100 * constants.kh / constants.density_g_ml * scale.ravel(), rtol=1e-5
    )
    assert np.trapezoid(norm_aif, t) == pytest.approx(datasets.AIF_SCALE, rel=1e-5)


def test_resample_time_holds_the_ends_and_interpolates_linearly():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    curves = np.array([[0.0, 2.0, 4.0, 6.0]])
    out = datasets.resample_time(curves, t, np.array([0.5, 2.5, 5.0]))
    np.testing.assert_allclose(out, [[1.0, 5.0, 6.0]])


def test_the_transformer_reads_a_held_end_as_beyond_the_acquisition():
    """acquired() marks the grid samples a short acquisition's held end fills (resample_time,
    as model_inputs and the simulated training curves hold it) and nothing else; the engine's
    transformer outputs then do not depend on the tissue curve there."""
    from bolus.learn.specs import Context, TransformerSpec
    from bolus.models.transformer import acquired

    grid = np.arange(120.0)
    rng = np.random.default_rng(3)
    for tr, frames in [(1.6, 50), (1.0, 60), (2.5, 40), (1.0, 150), (0.7, 200)]:
        times = np.arange(frames) * tr
        held = datasets.resample_time(rng.normal(size=(4, frames)), times, grid)
        # every grid time up to the last frame, and the first grid sample after it (the
        # acquisition's last value, interpolated within its final half-open interval)
        expected = min(int(np.floor(times[-1] + 1e-9)) + 1 + (times[-1] % 1 > 1e-9), 120)
        assert acquired(torch.from_numpy(held)).sum(1).tolist() == [expected] * 4, tr

    spec = TransformerSpec()
    torch.manual_seed(0)
    model = spec.build(120, {"d_model": 16, "heads": 4, "layers": 1, "feedforward": 32,
                             "patch": 16, "stride": 8}).eval()  # fmt: skip
    times = np.arange(50) * 1.6  # 78.4 s of acquisition: grid samples 0–79
    aif = datasets.resample_time(np.exp(-(((times - 20) / 6) ** 2)), times, grid)[None]
    curves = datasets.resample_time(rng.random((5, 50)) + 0.5, times, grid)
    ctx = Context(torch.device("cpu"), grid, {}, {}, 1.0, 6.0)
    before = spec.voxel_outputs(model, curves, np.repeat(aif, 5, 0), ctx)
    curves[:, 80:] = rng.random((5, 40))  # anything beyond the acquisition
    after = spec.voxel_outputs(model, curves, np.repeat(aif, 5, 0), ctx)
    np.testing.assert_array_equal(before, after)
    curves[:, 40] += 1.0  # within it, the maps move
    assert not np.allclose(spec.voxel_outputs(model, curves, np.repeat(aif, 5, 0), ctx), after)


# ----------------------------------------------------------------------------- networks
def test_network_shapes():
    from bolus.models.baselines import VoxelMLP
    from bolus.models.stnet import STNet
    from bolus.models.talebi import TalebiNet
    from bolus.models.transformer import PerfusionTransformer

    assert VoxelMLP(N_T, 5, (16,))(torch.zeros(7, N_T), torch.zeros(7, N_T)).shape == (7, 5)
    # odd in-plane sizes: the U-Net pads internally and crops back
    talebi = TalebiNet(N_T, 2, (4, 8), 4, 8, 2)
    assert talebi(torch.zeros(2, N_T, 13, 11), torch.zeros(2, N_T)).shape == (2, 2, 13, 11)
    stnet = STNet(N_T, 3, (4, 8, 8, 16), 8)
    voxels = torch.tensor([[0, 1, 2], [1, 12, 10], [1, 0, 0]])
    out = stnet(torch.zeros(2, N_T, 13, 11), torch.zeros(2, 13, 11), torch.zeros(2, N_T), voxels)
    assert out.shape == (3, 3)
    # the timing head's column is its own: a voxel's Tmax sees neither its neighbours nor S0
    timed = STNet(N_T, 3, (4, 8, 8, 16), 8, timing=2).eval()
    curves, s0, aif = torch.randn(2, N_T, 13, 11), torch.rand(2, 13, 11), torch.rand(2, N_T)
    with torch.no_grad():
        a = timed(curves, s0, aif, voxels)
        nudged = curves.clone()
        nudged[1, :, 11, 10] += 5.0  # the neighbour of voxel (1, 12, 10)
        b = timed(nudged, s0 * 3, aif, voxels)
    assert a.shape == (3, 3) and torch.equal(a[:, 2], b[:, 2])
    assert not torch.allclose(a[1, :2], b[1, :2])  # the shared head's CBF, CBV do
    with pytest.raises(ValueError, match="timing output 3"):
        STNet(N_T, 3, timing=3)
    tr = PerfusionTransformer(N_T, d_model=16, heads=16, layers=1, feedforward=32)
    out = tr(torch.randn(5, N_T), torch.randn(5, N_T))
    assert out["residue"].shape == (5, N_T) and out["local_aif"].shape == (5, N_T)
    assert out["bad"].shape == (5,) and (out["bad"] >= 0).all()
    # the flow-scaled residue is positive and monotonically non-increasing
    assert (out["residue"] > 0).all() and (out["residue"].diff(dim=-1) <= 0).all()


def test_stnet_whole_slice_encoder_equals_the_patch_encoder():
    """Voxel (i, j)'s features from the fully convolutional pass are those of the 7×7
    patch around it (zero-padded at the edge), as the paper computes them patch by patch."""
    from bolus.models.stnet import SpatialEncoder

    torch.manual_seed(0)
    enc = SpatialEncoder((4, 8, 8, 16)).eval()
    slice_ = torch.randn(1, 12, 15, 14)
    with torch.no_grad():
        whole = enc(slice_)  # (1, 16, T, 15, 14)
        padded = torch.nn.functional.pad(slice_, (3, 3, 3, 3))
        for i, j in [(0, 0), (7, 5), (14, 13), (3, 10)]:
            patch = padded[..., i : i + 7, j : j + 7]
            centre = enc(patch)[..., 3, 3]
            torch.testing.assert_close(whole[..., i, j], centre, rtol=1e-5, atol=1e-5)


def test_transformer_maps_have_physical_units():
    """A known flow-scaled residue gives back CBF, CBV and the tissue curve: maps_from and
    the reconstruction use the normalisation of bolus.learn.datasets correctly."""
    from bolus.learn.specs import Context, TransformerSpec
    from bolus.simulate.kinetics import arterial_input, residue_function, tissue_concentration

    constants = PerfusionConstants.from_config()
    t = np.arange(80) * 1.0
    aif = arterial_input(t, arrival_s=8.0)
    cbf, mtt = np.array([60.0, 20.0]), np.array([4.0, 9.0])
    tissue = tissue_concentration(
        t, np.stack([aif, aif]), cbf, mtt, np.array([3.0, 1.0]), constants
    )
    area = np.trapezoid(aif, t)
    kr = constants.kh / constants.density_g_ml
    # b = (CURVE_SCALE/AIF_SCALE)·(ρ/k_H)·F·R on the midpoint grid the simulator uses
    b = (
        (datasets.CURVE_SCALE / datasets.AIF_SCALE)
        / kr
        * (cbf[:, None] / 6000.0)
        * residue_function(t + 0.5, mtt, np.array([3.0, 1.0]))
    )
    ctx = Context(torch.device("cpu"), t, {}, {}, kr, 6.0)
    spec = TransformerSpec()
    out = {"residue": torch.tensor(b, dtype=torch.float32), "bad": torch.zeros(2)}
    maps = spec.maps_from(out, ctx)
    # b(0) is R at half a frame (midpoint rule): CBF within the residue's drop over 0.5 s
    np.testing.assert_allclose(maps["cbf"].numpy(), cbf, rtol=0.06)
    np.testing.assert_allclose(maps["cbv"].numpy(), cbf * mtt / 60.0, rtol=1e-3)
    curve = spec.reconstruct(
        torch.tensor(np.stack([aif, aif]) * datasets.AIF_SCALE / area, dtype=torch.float32),
        torch.tensor(b, dtype=torch.float32),
        ctx.dt,
    )
    expected = tissue * datasets.CURVE_SCALE / area
    np.testing.assert_allclose(curve.numpy(), expected, atol=2e-3 * expected.max())


def test_fine_tuned_slice_weights_keep_the_bolus_timing_of_both_cohorts(cohort):
    """A slice model's record keeps the AIF peak range of its training subjects; fine-tuned,
    the union of the initial weights' range and the cohort's (it has learned both), and the
    cohort's alone from initial weights that recorded none."""
    from bolus.learn.specs import get_spec
    from bolus.learn.train import _context, resolve_params

    config = config_for()
    params = resolve_params(config, "talebi")
    spec = get_spec("talebi")
    data = datasets.open_layout(cohort["data"], "slices")
    own = _context(spec, data, params, config, torch.device("cpu")).extra["aif_peak_s"]
    init = {"times_s": list(data.times_s), "norm": {"cbf": (30.0, 10.0), "cbv": (3.0, 1.0)},
            "maps": ["cbf", "cbv"]}  # fmt: skip
    before = _context(spec, data, params, config, torch.device("cpu"), init)
    assert before.extra["aif_peak_s"] == own
    init["aif_peak_s"] = [own[0] + 5.0, own[1] + 30.0]
    tuned = _context(spec, data, params, config, torch.device("cpu"), init)
    assert tuned.extra["aif_peak_s"] == [own[0], own[1] + 30.0]


def test_stnet_learns_tmax_on_the_brain_neighbours_inference_reads(cohort):
    """Training gives the timing head the slices' brain mask, as inference does (the mean
    curve of a voxel's in-brain neighbours, the schema's ``timing_reach`` 1): else it would
    learn on means that count the zeros beyond the brain."""
    from bolus.learn.specs import get_spec
    from bolus.learn.train import _context, resolve_params

    config = config_for()
    params = resolve_params(config, "stnet")
    assert params["timing_reach"] == 1
    spec = get_spec("stnet")
    data = datasets.open_layout(cohort["data"], spec.layout)
    ctx = _context(spec, data, params, config, torch.device("cpu"))
    model = spec.build(ctx.times_s.size, params)
    assert model.timing_reach == 1
    seen, timing_curves = [], model.timing_curves
    model.timing_curves = lambda curves, inside: (
        seen.append(inside) or timing_curves(curves, inside)
    )
    batch = spec.batch(data, data.rows("train")[:2], ctx)
    spec.loss(model, batch, ctx)
    assert len(seen) == 1 and torch.equal(seen[0], batch["mask"])


@pytest.mark.parametrize("name", ["mlp", "talebi", "talebi_truncated", "stnet", "transformer"])
def test_optimisation_steps_reduce_the_loss(cohort, name):
    from bolus.learn.specs import get_spec
    from bolus.learn.train import _context, _phase_data, resolve_params

    config = config_for()
    params = resolve_params(config, name)
    spec = get_spec(name)
    data = datasets.open_layout(cohort["data"], spec.layout)
    torch.manual_seed(0)
    ctx = _context(spec, data, params, config, torch.device("cpu"))
    # the slice models keep the training subjects' bolus timing (AIF peak times, s)
    peaks = ctx.extra.get("aif_peak_s")
    assert (peaks is not None) == (spec.layout == "slices")
    if peaks is not None:
        assert 0 < peaks[0] <= peaks[1] < ctx.times_s[-1]
    phase = spec.phases(params)[-1][0]
    model = spec.build(ctx.times_s.size, params)
    rows = data.rows("train")[: 256 if spec.layout == "voxels" else 2]
    ctx.extra["rng"] = np.random.default_rng(0)
    batch = spec.batch(data, rows, ctx, phase)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    before = float(spec.loss(model, batch, ctx, phase).detach())
    for _ in range(3):
        loss = spec.loss(model, batch, ctx, phase)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = float(spec.loss(model, batch, ctx, phase).detach())
    assert np.isfinite(before) and after < before
    if name == "transformer":  # the pre-training phase on simulated curves learns too
        sim = _phase_data("pretrain", data, ctx, params, config)
        batch = spec.batch(sim, sim.rows("train")[:128], ctx, "pretrain")
        before = float(spec.loss(model, batch, ctx, "pretrain").detach())
        for _ in range(3):
            loss = spec.loss(model, batch, ctx, "pretrain")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        assert float(spec.loss(model, batch, ctx, "pretrain")) < before


# ----------------------------------------------------------------------------- training
def test_killed_training_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(
    cohort, tmp_path
):
    """SIGKILL mid-way (as a preempted job), rerun: it restarts at the first unfinished
    epoch and, seeded per epoch, ends with exactly the weights of an uninterrupted run."""
    from bolus.learn.train import CHECKPOINT, train_model

    config = config_for(epochs=40, patience=100, max_batches_per_epoch=2)
    config["model_params"]["mlp"]["epochs"] = 40
    killed = tmp_path / "killed"
    script = (
        "import json, sys, torch; torch.set_num_threads(1); "
        "from bolus.learn.train import train_model; "
        f"train_model('mlp', {str(cohort['data'])!r}, {str(killed)!r}, json.loads(sys.argv[1]), threads=1)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(config)], env=env)
    checkpoint = killed / CHECKPOINT
    deadline = time.time() + 120
    epoch = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            if checkpoint.exists():
                try:
                    epoch = torch.load(checkpoint, weights_only=False)["state"]["epoch"]
                except Exception:  # being replaced right now
                    epoch = 0
                if epoch >= 2:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    saved = torch.load(checkpoint, weights_only=False)
    done = saved["state"]["epoch"]
    assert 2 <= done < 40
    assert not (killed / "model.pt").exists()

    train_model("mlp", cohort["data"], killed, config, threads=1)
    resumed = torch.load(killed / "model.pt", weights_only=False)
    history = torch.load(checkpoint, weights_only=False)["history"]
    assert [h["epoch"] for h in history] == list(range(1, 41))  # no epoch twice, none lost

    straight = tmp_path / "straight"
    train_model("mlp", cohort["data"], straight, config, threads=1)
    reference = torch.load(straight / "model.pt", weights_only=False)
    for key, value in reference["state"].items():
        torch.testing.assert_close(resumed["state"][key], value)


def test_a_checkpoint_of_other_parameters_is_not_resumed(cohort, tmp_path):
    """An edited model (here its epochs) trains afresh in the same folder: resuming the old
    run's checkpoint would continue another optimisation."""
    from bolus.learn.train import CHECKPOINT, train_model

    config = config_for(max_batches_per_epoch=1)
    config["model_params"]["mlp"]["epochs"] = 3
    train_model("mlp", cohort["data"], tmp_path, config, threads=1)
    config["model_params"]["mlp"]["epochs"] = 2
    train_model("mlp", cohort["data"], tmp_path, config, threads=1)
    history = torch.load(tmp_path / CHECKPOINT, weights_only=False)["history"]
    assert [h["epoch"] for h in history] == [1, 2]  # not the first run's 3 epochs, resumed


def test_a_run_given_more_epochs_continues_its_checkpoint_as_the_longer_run(cohort, tmp_path):
    """Raising ``epochs`` (a pre-training recipe extended, a cohort's longer run) continues
    the finished checkpoint: seeded per epoch, the 2 + 2 epochs end with exactly the weights
    of 4 straight, and in a two-phase model only the last phase is extended."""
    from bolus.learn.train import CHECKPOINT, train_model

    for model in ("mlp", "transformer"):
        config = config_for(max_batches_per_epoch=1, patience=100)
        config["model_params"].setdefault(model, {}).update(epochs=2, pretrain_epochs=1,
                                                            pretrain_curves=64)  # fmt: skip
        extended = tmp_path / f"{model}-extended"
        train_model(model, cohort["data"], extended, config, threads=1)
        config["model_params"][model]["epochs"] = 4
        train_model(model, cohort["data"], extended, config, threads=1)
        history = torch.load(extended / CHECKPOINT, weights_only=False)["history"]
        phases = [h["phase"] for h in history]
        assert [h["epoch"] for h in history] == list(range(1, len(phases) + 1))
        assert phases.count("pretrain") == (1 if model == "transformer" else 0)
        assert len(phases) - phases.count("pretrain") == 4
        straight = tmp_path / f"{model}-straight"
        train_model(model, cohort["data"], straight, config, threads=1)
        reference = torch.load(straight / "model.pt", weights_only=False)["state"]
        resumed = torch.load(extended / "model.pt", weights_only=False)["state"]
        for key, value in reference.items():
            torch.testing.assert_close(resumed[key], value)


def test_training_writes_curves_config_and_model(cohort, tmp_path):
    from bolus.learn.train import train_model

    model_dir = tmp_path / "talebi"
    train_model("talebi", cohort["data"], model_dir, config_for())
    for name in ("model.pt", "checkpoint.pt", "curves.tsv", "curves.png", "config.yaml"):
        assert (model_dir / name).exists(), name
    curves = (model_dir / "curves.tsv").read_text().splitlines()
    assert curves[0].split("\t")[:4] == ["epoch", "phase", "train_loss", "val_loss"]
    assert len(curves) == 2  # one epoch (model_params.talebi.epochs)


# ----------------------------------------------------------------------------- prediction
@pytest.mark.parametrize("name", ["rf", "stnet", "transformer"])
def test_prediction_writes_the_models_maps_in_the_native_grid(cohort, tmp_path, name):
    from bolus.learn.predict import predict_subject
    from bolus.learn.train import train_model

    model_file = train_model(name, cohort["data"], tmp_path / name, config_for())
    out = cohort["out"]
    expected = [paths.SubjectPaths(out, "sub-03").map(name, m) for m in MODELS[name].maps]
    written = predict_subject(model_file, out, "sub-03", device="cpu", threads=1)
    assert sorted(map(str, written)) == sorted(map(str, expected))
    conc = nib.load(str(paths.SubjectPaths(out, "sub-03").conc))
    mask = nib.load(str(paths.SubjectPaths(out, "sub-03").brain_mask)).get_fdata() > 0
    for path in written:
        img = nib.load(str(path))
        assert img.shape == conc.shape[:3]
        np.testing.assert_allclose(img.affine, conc.affine)
        data = img.get_fdata()
        assert np.isfinite(data).all() and (data >= 0).all() and (data[~mask] == 0).all()
        assert data[mask].std() > 0  # a map, not a constant
