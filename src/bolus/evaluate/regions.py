"""The regions a subject's maps are compared in.

=============  ==========================================================================
region         voxels
=============  ==========================================================================
``brain``      the brain mask where the reference is defined (tissue)
``gm``, ``wm`` grey / white matter of the subject's tissue label image, inside ``brain``
               (only when a label image is known, see :func:`find_tissue_labels`)
``lesion``     the reference lesion: the reference's Tmax > threshold inside ``brain``
               (the hypoperfused region; only when the reference has a Tmax map)
``user_mask``  the participants.tsv ``lesion_mask`` inside ``brain``
=============  ==========================================================================

A region with no voxel is left out (no rows in the subject table), except ``brain``.

Tissue labels
-------------
A label image (integer NIfTI, any grid of the same head) comes with a lookup table in the
BIDS ``dseg.tsv`` style: a TSV with columns ``index`` and ``name``, one row per label.
Grey matter is every label named ``gm``, ``grey matter`` or ``gray matter`` and white
matter every label named ``wm`` or ``white matter`` (case, ``_`` and ``-`` ignored); other
labels (CSF, vessels, lesion labels) belong to neither. The image is found (first match):

1. the participants.tsv column ``tissue_labels`` (a NIfTI path), lookup table beside it
   with the same name and ``.tsv`` (``seg.nii.gz`` → ``seg.tsv``);
2. ``labels.nii.gz`` (or ``.nii``) in the subject's ``reference_dir``, with
   ``labels.tsv`` beside it (what ``bolus simulate`` writes with its ground truth).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from bolus.evaluate.lesions import hypoperfusion_mask
from bolus.evaluate.metrics import as_mask
from bolus.io.errors import SubjectError

REGIONS = ("brain", "gm", "wm", "lesion", "user_mask")
TISSUE_NAMES = {
    "gm": ("gm", "grey matter", "gray matter"),
    "wm": ("wm", "white matter"),
}


def _normalised(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def tissue_masks(labels: np.ndarray, lookup: Mapping[int, str]) -> dict[str, np.ndarray]:
    """``{"gm": mask, "wm": mask}`` of a label image, by the lookup table's names (a tissue
    whose name the table lacks is left out)."""
    labels = np.asarray(labels)
    codes = np.rint(np.nan_to_num(labels.astype(np.float64), nan=-1)).astype(np.int64)
    masks = {}
    for tissue, names in TISSUE_NAMES.items():
        indices = [int(i) for i, n in lookup.items() if _normalised(n) in names]
        if indices:
            masks[tissue] = np.isin(codes, indices)
    return masks


def read_label_lookup(path: str | Path) -> dict[int, str]:
    """``{index: name}`` of a ``dseg.tsv``-style lookup table (columns index, name)."""
    table = pd.read_csv(path, sep="\t", dtype={"name": str})
    missing = {"index", "name"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: label table lacks column(s) {', '.join(sorted(missing))}")
    return {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True)}


def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def find_tissue_labels(
    participant_id: str, reference_dir=None, tissue_labels=None
) -> tuple[Path, Path] | None:
    """(label image, lookup table) of a subject (see the module docstring), or None.

    Raises :class:`SubjectError` when a named image is missing or has no lookup table."""
    if tissue_labels:
        image = Path(tissue_labels)
        if not image.exists():
            raise SubjectError(participant_id, image, "tissue_labels image does not exist")
        table = image.with_name(_nifti_stem(image) + ".tsv")
    elif reference_dir:
        image = next(
            (
                p
                for ext in (".nii.gz", ".nii")
                if (p := Path(reference_dir) / f"labels{ext}").exists()
            ),
            None,
        )
        if image is None:
            return None
        table = image.with_name("labels.tsv")
    else:
        return None
    if not table.exists():
        raise SubjectError(
            participant_id,
            image,
            f"label image without its lookup table {table.name} (columns index, name)",
        )
    return image, table


def load_tissue_masks(
    participant_id: str, target_shape, target_affine, reference_dir=None, tissue_labels=None
) -> dict[str, np.ndarray]:
    """The subject's ``gm``/``wm`` masks resampled (nearest neighbour) onto the DSC grid;
    ``{}`` when no label image is known."""
    from bolus.io.nifti import load_volume, resample_to_grid

    found = find_tissue_labels(participant_id, reference_dir, tissue_labels)
    if found is None:
        return {}
    image, table = found
    try:
        lookup = read_label_lookup(table)
    except ValueError as exc:
        raise SubjectError(participant_id, table, str(exc)) from exc
    data, affine = load_volume(image, dtype=np.float64)
    labels = resample_to_grid(data, affine, tuple(target_shape), target_affine, order=0)
    return tissue_masks(labels, lookup)


def subject_regions(
    reference_maps: Mapping[str, np.ndarray],
    brain_mask: np.ndarray,
    tmax_threshold_s: float | None = None,
    lesion_mask: np.ndarray | None = None,
    tissue: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every region of a subject (module docstring), in :data:`REGIONS` order; empty
    regions other than ``brain`` left out. All masks on the brain mask's grid."""
    brain = as_mask(brain_mask)
    candidates: dict[str, np.ndarray] = {"brain": brain}
    for name in ("gm", "wm"):
        if tissue and name in tissue:
            candidates[name] = _inside(tissue[name], brain, name)
    if "tmax" in reference_maps:
        candidates["lesion"] = hypoperfusion_mask(reference_maps["tmax"], brain, tmax_threshold_s)
    if lesion_mask is not None:
        candidates["user_mask"] = _inside(lesion_mask, brain, "lesion mask")
    return {
        name: mask
        for name in REGIONS
        if (mask := candidates.get(name)) is not None and (name == "brain" or mask.any())
    }


def _inside(mask: np.ndarray, brain: np.ndarray, what: str) -> np.ndarray:
    mask = as_mask(mask)
    if mask.shape != brain.shape:
        raise ValueError(
            f"{what} {mask.shape} and brain mask {brain.shape} differ in shape; "
            "resample it onto the DSC grid first (order=0)"
        )
    return mask & brain
