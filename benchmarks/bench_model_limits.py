"""What limits the accuracy of the learned models and oSVD on a simulated cohort's subjects.

    python benchmarks/bench_model_limits.py RESULTS PARTICIPANTS.tsv --seed 2026 [--split test]
                                            [--methods osvd mlp ...]

For every subject of ``--split``, the simulator re-creates the subject in memory (the same
(seed, number) as ``bolus simulate``, default acquisition) and every method maps it from
three inputs, scored against the truth with the columns of ``bench_models.py accuracy``
(over the truth's brain mask):

* ``pipeline``: the maps the workflow wrote (its own AIF, brain mask, conversion);
* ``true_aif``: the noisy simulated signal → ΔR2*, with the true arterial curve as AIF;
* ``noise_free``: the noise-free signal → ΔR2*, true AIF.

``pipeline`` − ``true_aif`` is what AIF selection and preprocessing cost, ``true_aif`` −
``noise_free`` what the noise (``--snr`` of the simulation) costs, and ``noise_free`` is the
method's own bias (for oSVD: the deconvolution under delay and dispersion; for a learned
model: what training did not learn). The learned models are those trained in RESULTS.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import map_accuracy, subject_accuracy  # noqa: E402

from bolus import paths  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results")
    parser.add_argument("participants")
    parser.add_argument("--seed", type=int, required=True, help="the cohort's simulation seed")
    parser.add_argument("--split", default="test")
    parser.add_argument("--methods", nargs="+", default=["osvd", "rf", "mlp", "stnet"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from bolus.config import with_defaults
    from bolus.evaluate.lesions import default_tmax_threshold_s
    from bolus.learn.datasets import SubjectSeries
    from bolus.learn.predict import load_trained, predict_maps
    from bolus.participants import read_participants
    from bolus.perfusion.concentration import concentration_from_signal
    from bolus.simulate.cohort import simulate_subject
    from bolus.stages import compute_maps

    threshold = default_tmax_threshold_s()
    config = with_defaults({})
    results = Path(args.results)
    trained = {}
    for m in args.methods:
        if m not in ("ssvd", "csvd", "osvd") and paths.model_file(results, m).exists():
            trained[m] = load_trained(paths.model_file(results, m), "cpu", args.threads)
    table = read_participants(args.participants)
    rows = []
    for pid, group, split, reference in zip(
        table.participant_id, table.group, table.split, table.reference_dir, strict=True
    ):
        if split != args.split:
            continue
        number = int(pid.split("-")[1])
        for row in subject_accuracy(results, pid, reference, args.methods, threshold):
            rows.append({"input": "pipeline", **row})
        sim = simulate_subject(args.seed, number, group)
        truth = {m: sim.truth[m] for m in ("cbf", "cbv", "tmax")}
        brain = sim.truth["brain"] > 0
        defined = brain & np.logical_and.reduce([np.isfinite(v) for v in truth.values()])
        aif = sim.aif_delta_r2s.astype(np.float32)
        for label, signal in (("true_aif", sim.signal), ("noise_free", sim.signal_noise_free)):
            conc, s0 = concentration_from_signal(signal, sim.te_s, sim.time_s, mask=brain)
            estimates = {}
            if "osvd" in args.methods:
                estimates["osvd"] = compute_maps(
                    conc, sim.time_s, aif, "osvd", brain, config["svd"], config["constants"]
                )
            subject = SubjectSeries(
                pid,
                conc.astype(np.float32),
                sim.time_s,
                aif,
                brain,
                s0,
                sim.phantom.grid.affine_ras,
            )
            for m, (spec, model, ctx) in trained.items():
                estimates[m] = predict_maps(spec, model, ctx, subject)
            for m, maps in estimates.items():
                row = {"input": label, "participant_id": pid, "method": m}
                row.update(map_accuracy(maps, truth, defined, threshold))
                rows.append(row)
        print(f"{pid} ({group}) done", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows)
    summary = frame.groupby(["method", "input"]).median(numeric_only=True)
    order = {"pipeline": 0, "true_aif": 1, "noise_free": 2}
    summary = summary.sort_index(key=lambda s: s.map(order) if s.name == "input" else s)
    print(f"{args.split} subjects; medians over subjects")
    print(summary.to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
