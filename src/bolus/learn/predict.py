"""Apply a trained model to one subject: maps in the subject's native DSC grid.

:func:`predict_subject` reads the subject's inputs as the model's spec says
(:meth:`bolus.learn.specs.ModelSpec.subject_inputs`: the concentration series, AIF, brain
mask and motion-corrected series for S0, normalised onto the model's time grid exactly as
training did, :func:`bolus.learn.datasets.model_inputs`; pix2pix: the coregistered TOF-MRA),
runs the model and writes ``sub-<label>_desc-<model>_<map>.nii.gz`` for the maps the model
predicts, with the converted series' affine. Maps are float32, 0 outside the brain mask,
CBF/CBV/Tmax ≥ 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bolus import paths


def load_trained(model_file, device="cpu", threads=None):
    """(spec, model, ctx) from a ``model.pt`` written by :func:`bolus.learn.train.train_model`."""
    import torch

    from bolus.learn.specs import Context, get_spec, pick_device

    if threads:
        torch.set_num_threads(int(threads))
    device = pick_device(device) if isinstance(device, str) else device
    record = torch.load(model_file, map_location=device, weights_only=False)
    spec = get_spec(record["name"])
    ctx = Context(
        device=device,
        times_s=np.asarray(record["times_s"], float),
        norm={k: tuple(v) for k, v in record["norm"].items()},
        params=record["params"],
        kh_over_rho=float(record.get("kh_over_rho", 0.0)),  # records of pix2pix before
        tmax_threshold_s=float(record.get("tmax_threshold_s", 6.0)),  # the one engine lack them
        autocast=device.type == "cuda" and torch.cuda.is_bf16_supported(),
    )
    ctx.extra["maps"] = list(record.get("maps", spec.maps))
    ctx.extra["aif_peak_s"] = record.get("aif_peak_s")  # None: read as acquired
    if spec.framework == "sklearn":
        model = record["estimator"]
        if threads:
            model.set_params(n_jobs=int(threads))
    else:
        model = spec.build(ctx.times_s.size, record["params"]).to(device)
        model.load_state_dict(record["state"])
        model.eval()
    return spec, model, ctx


def predict_maps(spec, model, ctx, subject) -> dict[str, np.ndarray]:
    """{map: (X, Y, Z) float32} for a :class:`bolus.learn.datasets.SubjectSeries`."""
    return spec.predict(model, spec.series_inputs(subject, ctx), ctx)


def predict_subject(model_file, output_dir, participant_id: str, device="auto", threads=None):
    """Predict and write one subject's maps; returns the written paths."""
    import logging
    import time

    from bolus.io.nifti import save_like

    spec, model, ctx = load_trained(model_file, device, threads)
    inputs, affine = spec.subject_inputs(output_dir, participant_id, ctx)
    started = time.perf_counter()
    maps = spec.predict(model, inputs, ctx)
    logging.getLogger("bolus.learn").info("%s: %s prediction %.2f s on %s", participant_id,
                                          spec.name, time.perf_counter() - started, ctx.device)  # fmt: skip
    out = paths.SubjectPaths(output_dir, participant_id)
    written = []
    for name in ctx.extra["maps"]:  # those it learned
        path = out.map(spec.name, name)
        save_like(maps[name], affine, path)
        written.append(Path(path))
    return written
