"""Training data of the learned models: written once per cohort as memory-mapped arrays.

Inputs of every model are the pipeline's own outputs for a subject (concentration series,
AIF table, brain mask, motion-corrected series for S0); targets are the subject's
reference maps (``reference_dir``: the simulator's truth, or vendor maps) resampled onto
the DSC grid by world coordinates, exactly as the metrics rule does.

Normalisation (the same at training and prediction, :func:`model_inputs`)
-----------------------------------------------------------------------
* curves are resampled onto the model's time grid (that of the first training subject, or
  the shipped weights' when they are fine-tuned), so a model sees one frame interval
  whatever the subject's;
* tissue curves are divided by the AIF's area (below) and multiplied by 100: the area of a
  normalised curve is then CBV·ρ/k_H (ml/100 g), the physics every model has to learn,
  independent of the subject's contrast dose and the scanner's ΔR2* scale;
* the AIF is divided by its area and multiplied by 10 (a curve of peak ≈ 1); the area is
  that of the acquired AIF within the model's time grid, so a longer acquisition (a
  recirculation tail beyond the grid) does not change the scale;
* S0 (mean baseline signal) is divided by its median in the brain mask;
* the slice models (``aligns_bolus``) read a subject whose AIF peaks outside the peak
  times of the subjects they were trained on (their record's ``aif_peak_s``) shifted
  along its own time axis to the range's nearer end (:func:`bolus_offset`): their temporal
  filters learned one cohort's bolus timing, and a later injection would otherwise read
  as another curve. The training data are not shifted (they define the range).

Layouts (under ``<output_dir>/models/data/``)
---------------------------------------------
``voxels/``: ``curves`` (N, T) float32, ``targets`` (N, M) float32 (M = :data:`MAPS`, NaN
where the reference lacks a map), ``subject`` (N,) int32 (row into ``aifs``), ``lesion``
(N,) bool (reference Tmax above the lesion threshold), ``split`` (N,) uint8 (0 train,
1 val, 255 unused), ``aifs`` (S, T) float32; at most ``training.voxels_per_subject`` voxels a subject.

``slices/``: every axial slice holding brain: ``curves`` (K, T, H, W), ``s0`` (K, H, W),
``mask`` (K, H, W) bool (brain and reference defined), ``targets`` (K, M, H, W) (NaN outside
``mask``), ``subject`` (K,), ``split`` (K,), ``aifs`` (S, T); slices of smaller subjects are
zero-padded to the cohort's largest in-plane size.

``meta.json`` holds the time grid, the map order, the subjects and their splits.

Arrays are written one subject at a time into ``numpy.lib.format.open_memmap`` files sized
beforehand, and read back with ``mmap_mode="r"``: the peak memory of writing and of
training is one subject / one batch, whatever the cohort's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bolus import paths
from bolus.io.errors import SubjectError

MAPS = paths.MAPS
SPLIT_CODES = {"train": 0, "val": 1}
UNUSED = 255
CURVE_SCALE = 100.0
AIF_SCALE = 10.0


# ----------------------------------------------------------------------------- subjects
@dataclass
class SubjectSeries:
    """One subject's model inputs as the pipeline wrote them (native DSC grid)."""

    participant_id: str
    conc: np.ndarray  # (X, Y, Z, T) ΔR2* (1/s) or HU
    times_s: np.ndarray  # (T,)
    aif: np.ndarray  # (T,)
    mask: np.ndarray  # (X, Y, Z) bool
    s0: np.ndarray  # (X, Y, Z) mean baseline signal
    affine: np.ndarray  # (4, 4)


def load_subject(output_dir, participant_id: str) -> SubjectSeries:
    """Read a subject's concentration series, AIF, brain mask and baseline signal."""
    from bolus.io.nifti import load_volume
    from bolus.io.tables import read_aif_table
    from bolus.perfusion.concentration import baseline_frames

    sp = paths.SubjectPaths(output_dir, participant_id)
    for path in (sp.conc, sp.aif_tsv, sp.brain_mask, sp.mc_dsc):
        if not path.exists():
            raise SubjectError(participant_id, path, "missing (run the perfusion stage first)")
    conc, affine = load_volume(sp.conc)
    times, aif = read_aif_table(sp.aif_tsv)
    mask = load_volume(sp.brain_mask)[0] > 0
    if conc.ndim != 4 or conc.shape[-1] != times.size:
        raise SubjectError(
            participant_id, sp.conc, f"shape {conc.shape} does not match {times.size} AIF times"
        )
    signal = load_volume(sp.mc_dsc)[0]
    mean_curve = signal[mask].mean(axis=0) if mask.any() else signal.reshape(-1, times.size)[0]
    base = baseline_frames(mean_curve, times)
    s0 = signal[..., base].mean(axis=-1)
    del signal
    return SubjectSeries(participant_id, conc, times, aif, mask, s0, affine)


def resample_time(curves: np.ndarray, times_s, grid_s) -> np.ndarray:
    """``curves`` (..., T) from ``times_s`` onto ``grid_s`` as float32
    (:func:`bolus.perfusion.deconvolution.resample_curves`: linear, the end values held
    beyond the acquisition, one matrix product over all voxels)."""
    from bolus.perfusion.deconvolution import resample_curves

    times = np.asarray(times_s, float)
    grid = np.asarray(grid_s, float)
    curves = np.asarray(curves, np.float32)
    if times.shape == grid.shape and np.allclose(times, grid, atol=1e-3):
        return curves
    return resample_curves(curves, times, grid)


def model_inputs(subject: SubjectSeries, grid_s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised (curves (X, Y, Z, T'), aif (T',), s0 (X, Y, Z)) on the model's time grid
    (see the module docstring)."""
    from bolus.perfusion.maps import trapezoid_area

    times = np.asarray(subject.times_s, float)
    grid = np.asarray(grid_s, float)
    within = times <= grid[-1] + 1e-6  # the AIF's area over the grid's span
    area = float(trapezoid_area(subject.aif[within], times[within]))
    if not np.isfinite(area) or area <= 0:
        raise SubjectError(subject.participant_id, None, f"AIF area is {area}; cannot normalise")
    curves = resample_time(subject.conc, subject.times_s, grid_s) * np.float32(CURVE_SCALE / area)
    aif = resample_time(subject.aif, subject.times_s, grid_s) * np.float32(AIF_SCALE / area)
    if not np.isfinite(curves).all():
        curves = np.nan_to_num(curves, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    s0 = (
        subject.s0 / max(float(np.median(subject.s0[subject.mask])), 1e-6)
        if subject.mask.any()
        else subject.s0
    )
    return curves, aif.astype(np.float32), np.nan_to_num(s0).astype(np.float32)


def aif_peak_s(aif, times_s) -> np.ndarray:
    """Time (s) of each AIF's maximum after its first sample (``aif`` (..., T) at
    ``times_s`` (T,)): when the bolus passes, whatever the acquisition's start."""
    times = np.asarray(times_s, float)
    return times[np.argmax(np.nan_to_num(np.asarray(aif, float), nan=-np.inf), axis=-1)] - times[0]


def bolus_peak_range(data) -> list[float]:
    """[earliest, latest] AIF peak time (s, :func:`aif_peak_s`) of the subjects whose rows
    a model trains and validates on: the bolus timing its weights have seen."""
    rows = np.concatenate([data.rows("train"), data.rows("val")])
    subjects = np.unique(np.asarray(data["subject"][rows]))
    peaks = aif_peak_s(np.asarray(data["aifs"][subjects]), data.times_s)
    return [float(peaks.min()), float(peaks.max())]


def bolus_offset(subject: SubjectSeries, peak_range) -> float:
    """Seconds to read ``subject`` later (> 0) or earlier (< 0) than its first frame so
    that its AIF peaks within ``peak_range`` (the weights' :func:`bolus_peak_range`; 0 when
    it already does). A model whose filters learned one bolus timing (a cohort's injection
    protocol) then reads a later or earlier bolus where it learned to; the maps relative to
    the AIF (CBF, CBV, MTT, Tmax) do not depend on when the bolus came."""
    peak = float(aif_peak_s(subject.aif, subject.times_s))
    return peak - float(np.clip(peak, *peak_range))


def reference_targets(subject: SubjectSeries, reference_dir, register_onto=None) -> np.ndarray:
    """(X, Y, Z, M) reference maps on the subject's grid, NaN where a map is absent or
    undefined and outside the brain mask."""
    from bolus.evaluate.reference import load_reference_maps

    if not reference_dir:
        raise SubjectError(subject.participant_id, None, "a training subject needs reference_dir")
    found = load_reference_maps(reference_dir, subject.mask.shape, subject.affine, register_onto)
    if not found:
        raise SubjectError(
            subject.participant_id, reference_dir, "no reference maps (cbf.nii.gz, …)"
        )
    out = np.full(subject.mask.shape + (len(MAPS),), np.nan, np.float32)
    for i, name in enumerate(MAPS):
        if name in found:
            out[..., i] = np.where(subject.mask, found[name], np.nan)
    return out


# ----------------------------------------------------------------------------- writing
def _alloc(folder: Path, name: str, shape, dtype) -> np.ndarray:
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


def write_training_data(
    data_dir,
    output_dir,
    subjects: list[dict],
    *,
    voxels_per_subject: int | None,
    tmax_threshold_s: float,
    seed: int,
    reference_registration: bool = False,
    grid_s=None,
) -> Path:
    """Write both layouts for the ``train`` and ``val`` rows of ``subjects``.

    ``subjects``: dicts with ``participant_id``, ``split`` and ``reference_dir``. Rows of
    other splits are ignored. ``grid_s``: the time grid (s from each subject's first frame;
    None: the first training subject's). Returns ``data_dir/meta.json``. One subject in
    memory at a time.
    """
    import nibabel as nib

    data_dir = Path(data_dir)
    rows = [r for r in subjects if r["split"] in SPLIT_CODES]
    if not any(r["split"] == "train" for r in rows):
        raise ValueError("no `train` subject to learn from (participants.tsv split column)")
    rows.sort(key=lambda r: (r["split"] != "train", r["participant_id"]))
    if grid_s is None:
        first = load_subject(output_dir, rows[0]["participant_id"])
        grid = first.times_s - first.times_s[0]
        del first
    else:
        grid = np.asarray(grid_s, float)
    n_t = grid.size

    # pass 1: sizes from the headers and masks only
    counts, n_slices, height, width = [], 0, 0, 0
    for r in rows:
        sp = paths.SubjectPaths(output_dir, r["participant_id"])
        mask = np.asarray(nib.load(str(sp.brain_mask)).dataobj) > 0
        n = int(mask.sum())
        counts.append(n if voxels_per_subject is None else min(n, int(voxels_per_subject)))
        n_slices += int(mask.any(axis=(0, 1)).sum())
        height, width = max(height, mask.shape[0]), max(width, mask.shape[1])

    vox, sl = data_dir / "voxels", data_dir / "slices"
    vox.mkdir(parents=True, exist_ok=True)
    sl.mkdir(parents=True, exist_ok=True)
    n_vox, n_maps = sum(counts), len(MAPS)
    v = {
        "curves": _alloc(vox, "curves", (n_vox, n_t), np.float32),
        "targets": _alloc(vox, "targets", (n_vox, n_maps), np.float32),
        "subject": _alloc(vox, "subject", (n_vox,), np.int32),
        "lesion": _alloc(vox, "lesion", (n_vox,), np.bool_),
        "split": _alloc(vox, "split", (n_vox,), np.uint8),
    }
    s = {
        "curves": _alloc(sl, "curves", (n_slices, n_t, height, width), np.float32),
        "s0": _alloc(sl, "s0", (n_slices, height, width), np.float32),
        "mask": _alloc(sl, "mask", (n_slices, height, width), np.bool_),
        "targets": _alloc(sl, "targets", (n_slices, n_maps, height, width), np.float32),
        "subject": _alloc(sl, "subject", (n_slices,), np.int32),
        "split": _alloc(sl, "split", (n_slices,), np.uint8),
    }
    aifs = np.zeros((len(rows), n_t), np.float32)
    v["split"][:] = UNUSED  # rows past the defined voxels (reference undefined) stay unused
    s["split"][:] = UNUSED

    # pass 2: one subject at a time
    v_at, s_at = 0, 0
    tmax_index = MAPS.index("tmax")
    for i, r in enumerate(rows):
        subject = load_subject(output_dir, r["participant_id"])
        curves, aif, s0 = model_inputs(subject, grid + subject.times_s[0])
        register_onto = (
            paths.SubjectPaths(output_dir, r["participant_id"]).conc
            if reference_registration
            else None
        )
        targets = reference_targets(subject, r.get("reference_dir"), register_onto)
        aifs[i] = aif
        code = SPLIT_CODES[r["split"]]
        defined = subject.mask & np.isfinite(targets).any(axis=-1)

        where = np.flatnonzero(defined.ravel())
        rng = np.random.default_rng([int(seed), i])
        pick = np.sort(rng.choice(where, size=min(counts[i], where.size), replace=False))
        n = pick.size
        v["curves"][v_at : v_at + n] = curves.reshape(-1, n_t)[pick]
        v["targets"][v_at : v_at + n] = targets.reshape(-1, n_maps)[pick]
        v["subject"][v_at : v_at + n] = i
        tmax = targets.reshape(-1, n_maps)[pick, tmax_index]
        v["lesion"][v_at : v_at + n] = np.nan_to_num(tmax) > tmax_threshold_s
        v["split"][v_at : v_at + n] = code
        v_at += n

        for z in np.flatnonzero(subject.mask.any(axis=(0, 1))):
            h, w = subject.mask.shape[:2]
            s["curves"][s_at, :, :h, :w] = np.moveaxis(curves[:, :, z], -1, 0)
            s["s0"][s_at, :h, :w] = s0[:, :, z]
            s["mask"][s_at, :h, :w] = defined[:, :, z]
            s["targets"][s_at] = np.nan
            s["targets"][s_at, :, :h, :w] = np.moveaxis(targets[:, :, z], -1, 0)
            s["subject"][s_at] = i
            s["split"][s_at] = code
            s_at += 1
        del subject, curves, targets

    for arrays in (v, s):
        for array in arrays.values():
            array.flush()
    for folder in (vox, sl):
        np.save(folder / "aifs.npy", aifs)
    meta = {
        "status": "ok",
        "times_s": grid.tolist(),
        "maps": list(MAPS),
        "subjects": [r["participant_id"] for r in rows],
        "splits": [r["split"] for r in rows],
        "n_voxels": v_at,
        "n_slices": s_at,
        "tmax_threshold_s": float(tmax_threshold_s),
    }
    path = data_dir / "meta.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------- reading
class Rows:
    """The row/batch interface the training engine reads: ``rows(split)`` (the subclass's)
    and ``batches``; indexing by array name."""

    arrays: dict

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def rows(self, split: str) -> np.ndarray:
        raise NotImplementedError

    def batches(self, split: str, batch_size: int, rng: np.random.Generator | None):
        """Row indices of ``split`` in batches (shuffled by ``rng``; in order when None)."""
        rows = self.rows(split)
        if rng is not None:
            rows = rng.permutation(rows)
        for at in range(0, rows.size, batch_size):
            yield np.sort(rows[at : at + batch_size])  # sorted: sequential memmap reads


class ArrayData(Rows):
    """Arrays in memory with the row/batch interface of the memory-mapped layouts (the
    simulated pre-training curves); every 5th row is validation."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self._val = np.arange(len(next(iter(arrays.values())))) % 5 == 0

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self._val if split == "val" else ~self._val)


class _Layout(Rows):
    """Read-only memory maps of one layout; indexing copies only the rows asked for."""

    def __init__(self, data_dir, layout: str):
        data_dir = Path(data_dir)
        self.meta = json.loads((data_dir / "meta.json").read_text())
        folder = data_dir / layout
        self.arrays = {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}
        self.times_s = np.asarray(self.meta["times_s"])
        self.maps = tuple(self.meta["maps"])

    def rows(self, split: str) -> np.ndarray:
        """Rows of ``split``. Without ``val`` subjects (a small cohort), every 5th training
        row is held out for validation instead."""
        codes = np.asarray(self.arrays["split"])
        train = np.flatnonzero(codes == SPLIT_CODES["train"])
        val = np.flatnonzero(codes == SPLIT_CODES["val"])
        if val.size == 0:
            held = np.arange(train.size) % 5 == 0
            train, val = train[~held], train[held]
        return train if split == "train" else val


class VoxelData(_Layout):
    def __init__(self, data_dir):
        super().__init__(data_dir, "voxels")


class SliceData(_Layout):
    def __init__(self, data_dir):
        super().__init__(data_dir, "slices")


def open_layout(data_dir, layout: str) -> _Layout:
    return {"voxels": VoxelData, "slices": SliceData}[layout](data_dir)


def target_norm(data, maps, max_rows: int = 200_000) -> dict[str, tuple[float, float]]:
    """(mean, sd) of every map over (a bounded sample of) the training rows; maps with no
    finite target (the references lack them) are left out: the model does not learn them.
    ModelSkipped when none is left."""
    rows = data.rows("train")
    if rows.size > max_rows:
        rows = np.sort(np.random.default_rng(0).choice(rows, max_rows, replace=False))
    targets = np.asarray(data["targets"][rows], np.float64)
    if targets.ndim == 4:  # slices: (K, M, H, W) → (voxels, M)
        targets = np.moveaxis(targets, 1, -1).reshape(-1, targets.shape[1])
    norm = {}
    for name in maps:
        column = targets[:, data.maps.index(name)]
        column = column[np.isfinite(column)]
        if column.size:  # a map the references lack is not learned (its targets are NaN)
            norm[name] = (float(column.mean()), float(max(column.std(), 1e-3)))
    if not norm:
        from bolus.io.errors import ModelSkipped

        raise ModelSkipped(
            f"the reference maps hold none of the maps it predicts ({', '.join(maps)})"
        )
    return norm
