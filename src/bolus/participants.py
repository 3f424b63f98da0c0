"""participants.tsv: read, validate, resolve paths, assign missing splits reproducibly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from bolus.config import load_schema

PATH_COLUMNS = (
    "dicom_dir",
    "dsc_nifti",
    "reference_dir",
    "lesion_mask",
    "tof_dicom_dir",
    "tissue_labels",
    "brain_mask",
    "aif_mask",
    "tof_nifti",
    "reference_region_mask",
)
SPLIT_FRACTIONS = (("train", 0.6), ("val", 0.2), ("test", 0.2))


def assign_split(participant_id: str, seed: int) -> str:
    """A split drawn from a hash of (seed, participant_id): stable when rows are added,
    removed or reordered, unlike a shuffled list."""
    digest = hashlib.sha256(f"{seed}:{participant_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        edge += fraction
        if u < edge:
            return name
    return SPLIT_FRACTIONS[-1][0]


def read_participants(path: str | Path, seed: int = 0) -> pd.DataFrame:
    """Read and validate participants.tsv; relative paths resolve against its folder.

    Returns one row per subject, indexed by ``participant_id``, with absolute paths (or
    None) and a ``split`` for every row. Raises ``ValueError`` naming the row and column.
    """
    import jsonschema

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"participants file not found: {path}")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    if "participant_id" not in table.columns and len(table.columns) == 1:
        raise ValueError(
            f"{path}: not a tab-separated table: the header is one column "
            f"({table.columns[0][:60]!r}); separate the columns with tabs"
        )
    if "participant_id" not in table.columns:
        raise ValueError(f"{path}: no participant_id column (columns: {', '.join(table.columns)})")
    table = table.map(lambda v: v.strip() or None if isinstance(v, str) else v)
    duplicated = table["participant_id"][table["participant_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{path}: duplicated participant_id: {', '.join(map(str, duplicated))}")
    validator = jsonschema.Draft202012Validator(load_schema("participants"))
    problems = []
    for i, row in enumerate(table.to_dict("records"), start=2):
        record = {k: v for k, v in row.items() if v is not None}
        for error in validator.iter_errors(record):
            where = ".".join(map(str, error.path)) or "row"
            who = row.get("participant_id") or f"line {i}"
            if error.validator == "anyOf":
                problems.append(f"  {who}: needs dicom_dir or dsc_nifti")
            else:
                problems.append(f"  {who} ({where}): {error.message}")
    if problems:
        raise ValueError(f"{path}: invalid rows:\n" + "\n".join(problems))
    root = path.resolve().parent
    for column in PATH_COLUMNS:
        if column in table.columns:
            table[column] = [str((root / v).resolve()) if v else None for v in table[column]]
        else:
            table[column] = None
    if "split" not in table.columns:
        table["split"] = None
    table["split"] = [
        split or assign_split(pid, seed)
        for pid, split in zip(table["participant_id"], table["split"], strict=True)
    ]
    return table.set_index("participant_id", drop=False)


def strata_columns(table: pd.DataFrame) -> list[str]:
    """Columns beyond the documented ones: carried into study tables as strata."""
    known = {"participant_id", "split", "lesion_side", *PATH_COLUMNS}
    return [c for c in table.columns if c not in known]


def source_fingerprint(path) -> str:
    """``<files>:<bytes>:<newest mtime in ns>`` of a file, or of every file under a folder
    (one stat per file, no file is read); ``missing`` when there is none. The workflow
    carries it as a param of the jobs that read a subject's source data, so a replaced or
    re-exported DICOM folder reruns that subject's chain."""
    import os

    def walk(folder):
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    yield from walk(entry.path)
                elif entry.is_file(follow_symlinks=True):
                    yield entry.stat()

    path = Path(path)
    if path.is_file():
        stats = [path.stat()]
    elif path.is_dir():
        stats = list(walk(path))
    else:
        return "missing"
    size = sum(s.st_size for s in stats)
    newest = max((s.st_mtime_ns for s in stats), default=0)
    return f"{len(stats)}:{size}:{newest}"
