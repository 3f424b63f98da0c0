"""pix2pix's (Kossen et al.) training data: the coregistered TOF-MRA volumes and references.

Training data (``<output_dir>/models/data/tof/``, written once per cohort)
    one row per train/val subject that completed the TOF stage, every volume on its own DSC
    grid zero-padded to the cohort's largest: ``tof`` (S, X, Y, Z) float32, the coregistered
    TOF divided by its 99.5th percentile in the brain (:func:`bolus.models.pix2pix.normalise_tof`);
    ``targets`` (S, 5, X, Y, Z) float32, the reference maps (CBF, CBV, MTT, Tmax, TTP) on the
    DSC grid in their units, NaN where undefined; ``mask`` (S, X, Y, Z) bool (brain, every
    map defined); ``split`` (S,) uint8 (0 train, 1 val); ``meta.json``: subjects, splits,
    shapes. Memory-mapped (``numpy.lib.format.open_memmap``), one subject in memory at a time.

Training and prediction go through the engine of every model
(:func:`bolus.learn.train.train_model`, :func:`bolus.learn.predict.predict_subject`) with
:class:`bolus.learn.specs.Pix2PixSpec`. Validation subjects: the ``val`` split; without
one, every 5th training subject when there are five or more, else the training subjects
themselves (a small cohort: the curve then shows fit, not generalisation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bolus import paths
from bolus.io.errors import SubjectError
from bolus.learn.datasets import Rows
from bolus.models import MODELS

MAPS = MODELS["pix2pix"].maps
SPLIT_CODES = {"train": 0, "val": 1}


# ----------------------------------------------------------------------------- data
def load_tof_subject(output_dir, participant_id: str, normalise: bool = True):
    """(coregistered TOF, normalised unless ``normalise`` is False; brain mask; DSC affine)
    of one subject."""
    from bolus.io.nifti import load_volume
    from bolus.models.pix2pix import normalise_tof

    sp = paths.SubjectPaths(output_dir, participant_id)
    for path in (sp.coreg_tof, sp.brain_mask):
        if not path.exists():
            raise SubjectError(participant_id, path, "missing (run the TOF stage first)")
    mask_data, affine = load_volume(sp.brain_mask)
    mask = mask_data > 0
    tof, _ = load_volume(sp.coreg_tof)
    if tof.shape != mask.shape:
        raise SubjectError(
            participant_id, sp.coreg_tof, f"shape {tof.shape} is not the DSC grid's {mask.shape}"
        )
    try:
        return (normalise_tof(tof, mask) if normalise else tof), mask, affine
    except ValueError as exc:
        raise SubjectError(participant_id, sp.coreg_tof, str(exc)) from exc


def write_tof_training_data(
    data_dir, output_dir, rows: list[dict], reference_registration: bool = False
) -> Path:
    """Write the TOF layout for the train/val ``rows``; returns ``data_dir/meta.json``.
    ``reference_registration``: reference maps registered onto the DSC grid (config key)."""
    import nibabel as nib

    from bolus.evaluate.reference import load_reference_maps

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(
        (r for r in rows if r["split"] in SPLIT_CODES),
        key=lambda r: (r["split"] != "train", r["participant_id"]),
    )
    if not any(r["split"] == "train" for r in rows):
        raise ValueError("no `train` subject to learn from (participants.tsv split column)")
    shapes = [
        nib.load(str(paths.SubjectPaths(output_dir, r["participant_id"]).brain_mask)).shape[:3]
        for r in rows
    ]
    big = tuple(int(max(s[i] for s in shapes)) for i in range(3))
    n = len(rows)

    def alloc(name, shape, dtype):
        return np.lib.format.open_memmap(data_dir / f"{name}.npy", "w+", dtype, shape)

    tof = alloc("tof", (n, *big), np.float32)
    targets = alloc("targets", (n, len(MAPS), *big), np.float32)
    mask = alloc("mask", (n, *big), np.bool_)
    split = alloc("split", (n,), np.uint8)
    for i, r in enumerate(rows):
        pid = r["participant_id"]
        volume, brain, affine = load_tof_subject(output_dir, pid)
        if not r.get("reference_dir"):
            raise SubjectError(pid, None, "a training subject needs reference_dir")
        register_onto = paths.SubjectPaths(output_dir, pid).conc if reference_registration else None
        found = load_reference_maps(r["reference_dir"], brain.shape, affine, register_onto)
        missing = [m for m in MAPS if m not in found]
        if missing:
            raise SubjectError(pid, r["reference_dir"], f"no reference {', '.join(missing)}")
        x, y, z = brain.shape
        stack = np.stack([found[m] for m in MAPS])
        defined = brain & np.isfinite(stack).all(axis=0)
        tof[i] = 0.0
        tof[i, :x, :y, :z] = volume
        targets[i] = np.nan
        targets[i, :, :x, :y, :z] = np.where(defined, stack, np.nan)
        mask[i] = False
        mask[i, :x, :y, :z] = defined
        split[i] = SPLIT_CODES[r["split"]]
    for array in (tof, targets, mask, split):
        array.flush()
    meta = {
        "status": "ok",
        "layout": "tof",
        "maps": list(MAPS),
        "subjects": [r["participant_id"] for r in rows],
        "splits": [r["split"] for r in rows],
        "shapes": [list(map(int, s)) for s in shapes],
    }
    out = data_dir / "meta.json"
    out.write_text(json.dumps(meta, indent=2) + "\n")
    return out


class TOFData(Rows):
    """Read-only memory maps of the TOF layout, with the row/batch interface of the other
    layouts: a row is a subject volume."""

    times_s = np.zeros(0)  # no time axis: the model reads the TOF-MRA
    maps = MAPS

    def __init__(self, data_dir):
        data_dir = Path(data_dir)
        self.meta = json.loads((data_dir / "meta.json").read_text())
        self.arrays = {p.stem: np.load(p, mmap_mode="r") for p in sorted(data_dir.glob("*.npy"))}

    def rows(self, split: str) -> np.ndarray:
        codes = np.asarray(self.arrays["split"])
        train = np.flatnonzero(codes == SPLIT_CODES["train"])
        val = np.flatnonzero(codes == SPLIT_CODES["val"])
        if val.size == 0 and train.size >= 5:
            held = np.arange(train.size) % 5 == 0
            train, val = train[~held], train[held]
        elif val.size == 0:
            val = train
        return train if split == "train" else val

    def example(self, row: int, scales, depth: int):
        """(tof (1, X', Y', Z'), targets (5, …) in [−1, 1], mask (1, …)) padded, tensors."""
        import torch

        from bolus.models.pix2pix import normalise_targets, pad_to_multiple

        multiple = 2**depth
        target = np.asarray(self.arrays["targets"][row])
        maps = {m: target[i] for i, m in enumerate(MAPS)}
        x, _ = pad_to_multiple(np.asarray(self.arrays["tof"][row])[None], multiple)
        y, _ = pad_to_multiple(normalise_targets(maps, scales), multiple)
        m, _ = pad_to_multiple(np.asarray(self.arrays["mask"][row], np.float32)[None], multiple)
        return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in (x, y, m))
