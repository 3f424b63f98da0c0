"""Why stnet's Tmax comes out flat: STNet against its temporal head alone, on the same data.

    python benchmarks/bench_stnet_tmax.py stnet [--work DIR] [--epochs 7] [--set KEY=VALUE ...]
        [--no-s0]
    python benchmarks/bench_stnet_tmax.py head [--work DIR] [--steps 1200]

Both modes first simulate (once, kept in ``--work``) a 12-subject training cohort and a
4-subject test cohort across protocols (:func:`bolus.learn.pretrain.write_pretraining_cohort`,
seeds 7 and 8: the slice layout of the shipped models' recipe, on their 1 s × 120 grid).

``stnet`` trains STNet through the engine (2 slices a step, ``--set`` overrides
``model_params.stnet``, e.g. ``--set physics_weight=0``; ``--no-s0`` gives its head zeros
for S0) and prints, for every map, the
Pearson r, median |relative error| and the sd of estimate and truth over the test subjects'
brain voxels. ``head`` trains the temporal head alone on the cohort's voxel curves and their
subject's AIF (batches of 256 voxels across subjects, 30 % lesion voxels) and prints Tmax and
CBF on the test voxels every 300 steps. Measured (README, "stnet"): the head alone reaches
Tmax r 0.64 in 300 steps (0.45 with ``--batch-slices 2``, 0.70 at 1,200). STNet before its
timing head learned CBF (r 0.77 after ≈ 300 steps, 0.85 after 28 epochs) but not Tmax (r
0.21 and 0.26, sd 0.18 and 0.16 s against 2.7 s; ``--no-s0``: r 0.24); with it, Tmax r 0.54
(sd 0.31 s) after 7 epochs and 0.77 (sd 0.78 s) after 28, CBF r 0.76 and 0.86. Figures,
not a timed test; 6–10 min a run of 7 epochs on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def cohorts(work: Path) -> None:
    from bolus.learn.pretrain import write_pretraining_cohort

    for name, n, seed in (("train", 12, 7), ("test", 4, 8)):
        if not (work / name / "meta.json").exists():
            write_pretraining_cohort(work / name, n, seed=seed)


def zero_s0() -> None:
    """Ablation: STNet's head given zeros for S0, in training and in the slice inference."""
    from bolus.models import stnet

    forward, predict = stnet.STNet.forward, stnet.STNet.predict_slice
    stnet.STNet.forward = lambda self, curves, s0, aif, voxels: forward(
        self, curves, s0 * 0.0, aif, voxels
    )
    stnet.STNet.predict_slice = lambda self, curves, s0, aif, inside, chunk=1024: predict(
        self, curves, s0 * 0.0, aif, inside, chunk
    )


def run_stnet(work: Path, epochs: int, overrides: dict, threads: int, no_s0=False) -> None:
    import torch

    from bolus.learn.datasets import MAPS, open_layout
    from bolus.learn.predict import load_trained
    from bolus.learn.train import train_model

    params = {"epochs": epochs, "slices_per_batch": 2, **overrides}
    config = {"seed": 1, "model_params": {"stnet": params},
              "training": {"device": "cpu", "patience": 100, "lr": 1e-3, "relative_loss": True}}  # fmt: skip
    tag = "stnet-" + "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    if no_s0:
        tag += "-no_s0"
        zero_s0()
    started = time.perf_counter()
    model_file = train_model("stnet", work / "train", work / tag, config, threads=threads)
    print(f"trained in {time.perf_counter() - started:.0f} s ({work / tag})")
    spec, model, ctx = load_trained(model_file, "cpu", threads)
    data = open_layout(work / "test", "slices")
    mean, sd = ctx.scale(spec.maps)
    estimates, truths = [], []
    for row in range(len(data["curves"])):
        mask = np.array(data["mask"][row])
        if not mask.any():
            continue
        aif = torch.as_tensor(np.array(data["aifs"][int(data["subject"][row])]))
        pred = model.predict_slice(torch.as_tensor(np.array(data["curves"][row])),
                                   torch.as_tensor(np.array(data["s0"][row])), aif,
                                   torch.as_tensor(mask))  # fmt: skip
        truth = np.stack([np.asarray(data["targets"][row][MAPS.index(m)])[mask]
                          for m in spec.maps], -1)  # fmt: skip
        ok = np.isfinite(truth).all(-1)
        estimates.append((pred * sd + mean).numpy()[ok])
        truths.append(truth[ok])
    est, tru = np.concatenate(estimates), np.concatenate(truths)
    for i, name in enumerate(spec.maps):
        r = np.corrcoef(est[:, i], tru[:, i])[0, 1]
        rel = np.median(np.abs(est[:, i] / tru[:, i] - 1))
        print(f"{name}: r {r:.3f}, median |rel| {rel:.3f}, sd {est[:, i].std():.3f} "
              f"(truth {tru[:, i].std():.3f})")  # fmt: skip


def voxels(folder: Path, n: int, seed: int, lesion_fraction: float | None):
    """(inputs (n, 2, T): curve and the subject's AIF; Tmax; CBF; slice) of ``n`` brain
    voxels."""
    import torch

    from bolus.learn.datasets import MAPS, open_layout

    data = open_layout(folder, "slices")
    rng = np.random.default_rng(seed)
    mask = np.asarray(data["mask"][:])
    tmax = np.asarray(data["targets"][:, MAPS.index("tmax")])
    cbf = np.asarray(data["targets"][:, MAPS.index("cbf")])
    k, i, j = np.nonzero(mask & np.isfinite(tmax))
    lesion = tmax[k, i, j] > 6.0
    if lesion_fraction is None:  # the brain as it is
        pick = rng.choice(k.size, n)
    else:
        n_lesion = int(n * lesion_fraction)
        pick = np.concatenate([
            rng.choice(np.flatnonzero(lesion), n_lesion),
            rng.choice(np.flatnonzero(~lesion), n - n_lesion),
        ])  # fmt: skip
    k, i, j = k[pick], i[pick], j[pick]
    curves = np.stack(
        [np.asarray(data["curves"][a, :, b, c]) for a, b, c in zip(k, i, j, strict=True)]
    )
    aifs = np.asarray(data["aifs"][:])[np.asarray(data["subject"][:])[k]]
    as_tensor = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    inputs = as_tensor(np.stack([curves, aifs], 1))
    return inputs, as_tensor(tmax[k, i, j]), as_tensor(cbf[k, i, j]), torch.as_tensor(k)


def run_head(work: Path, steps: int, threads: int, batch_slices: int | None) -> None:
    import torch
    from torch.nn import functional as F

    from bolus.models.stnet import TemporalHead

    torch.set_num_threads(threads)
    x, tmax, cbf, slices = voxels(work / "train", 40_000, 1, 0.3)
    x_test, tmax_test, cbf_test, _ = voxels(work / "test", 8_000, 2, None)
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    head = TemporalHead(2, 2, 24, (1, 3, 8, 25))
    optimiser = torch.optim.Adam(head.parameters(), 1e-3)
    (tm, ts), (cm, cs) = (tmax.mean(), tmax.std()), (cbf.mean(), cbf.std())
    for step in range(steps):
        if batch_slices:  # as STNet's batches: voxels of a few slices only
            chosen = slices.unique()[torch.randperm(len(slices.unique()), generator=generator)]
            pool = torch.isin(slices, chosen[:batch_slices]).nonzero()[:, 0]
            rows = pool[torch.randint(0, len(pool), (256,), generator=generator)]
        else:
            rows = torch.randint(0, len(x), (256,))
        out = head(x[rows])
        loss = F.smooth_l1_loss(out[:, 0], (tmax[rows] - tm) / ts, beta=0.5) + F.smooth_l1_loss(
            out[:, 1], (cbf[rows] - cm) / cs, beta=0.5
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if (step + 1) % 300 == 0:
            with torch.no_grad():
                out = head(x_test)
            t_est, c_est = out[:, 0] * ts + tm, out[:, 1] * cs + cm
            print(f"step {step + 1}: Tmax r {np.corrcoef(t_est, tmax_test)[0, 1]:.3f}, sd "
                  f"{float(t_est.std()):.2f} (truth {float(tmax_test.std()):.2f}); CBF r "
                  f"{np.corrcoef(c_est, cbf_test)[0, 1]:.3f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("stnet", "head"))
    ap.add_argument("--work", type=Path, default=Path("bench_stnet_tmax"))
    ap.add_argument("--epochs", type=int, default=7)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-slices", type=int, default=None,
                    help="head: each batch's voxels from this many random slices")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-s0", action="store_true", help="stnet: S0 given as zeros (ablation)")
    args = ap.parse_args()
    cohorts(args.work)
    if args.mode == "head":
        run_head(args.work, args.steps, args.threads, args.batch_slices)
        return
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    run_stnet(args.work, args.epochs, overrides, args.threads, args.no_s0)


if __name__ == "__main__":
    main()
