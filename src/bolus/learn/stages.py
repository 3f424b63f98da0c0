"""The file layer of the learned models: one function per workflow rule.

The Snakemake scripts (``scripts/training_data.py``, ``train_model.py``,
``predict_model.py``) are thin calls of these; tests call them directly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bolus.config import with_defaults


def _verbose() -> None:
    logging.getLogger("bolus.learn").setLevel(logging.INFO)


def training_data_stage(rows, output_dir, out_meta, config=None) -> Path:
    """Write the cohort's memory-mapped training data; ``out_meta`` is its ``meta.json``.

    Rows whose subject did not complete the perfusion stage (verdict not ok) are left out."""
    from bolus import paths
    from bolus.learn.datasets import write_training_data
    from bolus.qc import read_verdict

    _verbose()
    config = with_defaults(config)
    usable = []
    for row in rows:
        verdict = paths.verdict(output_dir, row["participant_id"], "perfusion")
        if verdict.exists() and read_verdict(verdict).get("status") == "ok":
            usable.append(row)
        else:
            logging.getLogger("bolus.learn").warning(
                "%s: left out of the training data (perfusion stage not ok)",
                row["participant_id"],
            )
    if not usable:
        raise RuntimeError(
            "no train/val subject completed the perfusion stage: nothing to train on "
            f"(see {paths.qc_table(output_dir)} after the run, or the logs)"
        )
    return write_training_data(
        Path(out_meta).parent,
        output_dir,
        usable,
        voxels_per_subject=config["training"]["voxels_per_subject"],
        tmax_threshold_s=config["lesion"]["tmax_threshold_s"],
        seed=config["seed"],
        reference_registration=bool(config.get("reference_registration", False)),
    )


def train_stage(model, meta, model_dir, threads=None, config=None) -> Path:
    """Train ``model`` on the data beside ``meta`` (resumes from a checkpoint in
    ``model_dir``)."""
    from bolus.learn.train import train_model

    _verbose()
    return train_model(model, Path(meta).parent, model_dir, config, threads=threads)


def predict_stage(model_file, output_dir, subject, outputs, threads=None, config=None):
    """Predict one subject's maps; checks that they are the rule's declared outputs."""
    from bolus.learn.predict import predict_subject

    _verbose()
    device = with_defaults(config)["training"]["device"]
    written = predict_subject(model_file, output_dir, subject, device=device, threads=threads)
    missing = {str(Path(p)) for p in outputs} - {str(p) for p in written}
    if missing:
        raise RuntimeError(f"{subject}: the model wrote no {', '.join(sorted(missing))}")
    return written
