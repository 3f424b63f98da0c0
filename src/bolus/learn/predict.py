"""Apply a trained model to one subject: maps in the subject's native DSC grid.

:func:`predict_subject` reads the subject's pipeline outputs (concentration series, AIF,
brain mask, motion-corrected series for S0), normalises them onto the model's time grid
exactly as training did (:func:`bolus.learn.datasets.model_inputs`), runs the model and
writes ``sub-<label>_desc-<model>_<map>.nii.gz`` for the maps the model predicts, with the
converted series' affine. Maps are float32, 0 outside the brain mask, CBF/CBV/Tmax ≥ 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bolus import paths


def load_trained(model_file, device="cpu", threads=None):
    """(spec, model, ctx) from a ``model.pt`` written by :func:`bolus.learn.train.train_model`."""
    import torch

    from bolus.learn.specs import Context, get_spec
    from bolus.learn.train import pick_device

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
        kh_over_rho=float(record["kh_over_rho"]),
        tmax_threshold_s=float(record["tmax_threshold_s"]),
        autocast=device.type == "cuda" and torch.cuda.is_bf16_supported(),
    )
    ctx.extra["maps"] = list(record.get("maps", spec.maps))
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
    from bolus.learn.datasets import model_inputs

    curves, aif, s0 = model_inputs(subject, ctx.times_s + subject.times_s[0])
    return spec.predict(model, (curves, aif, s0, subject.mask), ctx)


def predict_subject(model_file, output_dir, participant_id: str, device="auto", threads=None):
    """Predict and write one subject's maps; returns the written paths."""
    from bolus.io.nifti import save_like
    from bolus.learn.datasets import load_subject

    spec, model, ctx = load_trained(model_file, device, threads)
    subject = load_subject(output_dir, participant_id)
    maps = predict_maps(spec, model, ctx, subject)
    out = paths.SubjectPaths(output_dir, participant_id)
    written = []
    for name in ctx.extra["maps"]:  # those it learned
        path = out.map(spec.name, name)
        save_like(maps[name], subject.affine, path)
        written.append(Path(path))
    return written
