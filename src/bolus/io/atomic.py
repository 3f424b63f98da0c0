"""Atomic output: a file appears whole under its final name, or not at all.

Every writer of the project writes to a temporary name in the destination folder and then
renames it over the final name (:func:`os.replace`, atomic on POSIX within one file system).
A run killed mid-write therefore leaves the previous version, or nothing, never a half
written NIfTI or table under an output name. The temporary name is hidden
(``.<name>.<pid>.<token>.partial<ext>``, the real extension kept so that nibabel still
gzips ``.nii.gz``); :func:`remove_stale_partials` clears those a killed process left.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PARTIAL = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.partial")


def _extension(name: str) -> str:
    for ext in (".nii.gz", ".tsv.gz", ".tar.gz"):
        if name.endswith(ext):
            return ext
    return Path(name).suffix


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was. Parent
    folders are created. The data are flushed to disk (fsync) before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = _extension(path.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial{ext}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, record, **kwargs) -> Path:
    """JSON with 2-space indent and a final newline (``kwargs`` go to :func:`json.dumps`)."""
    return write_text(path, json.dumps(record, indent=2, **kwargs) + "\n")


def write_table(path: str | Path, table, **to_csv) -> Path:
    """A pandas DataFrame as TSV (tab-separated, no index unless ``to_csv`` says so)."""
    options = {"sep": "\t", "index": False, **to_csv}
    with atomic_path(path) as tmp:
        table.to_csv(tmp, **options)
    return Path(path)


def save_image(image, path: str | Path) -> Path:
    """A nibabel image (``.nii`` or ``.nii.gz``, from the name)."""
    import nibabel as nib

    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Remove temporary files in ``folder`` whose writing process (on this machine) is gone."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _PARTIAL.match(path.name)
        if match and path.is_file() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def install(sources: dict) -> list[Path]:
    """Copy each finished file (``{source: destination}``) to its destination: all of them
    or, on an error, none (destinations keep what they held). Copies go to hidden
    temporaries beside the destinations first; the renames come last."""
    import shutil

    staged: list[tuple[Path, Path]] = []
    try:
        for source, destination in sources.items():
            destination = Path(destination)
            destination.parent.mkdir(parents=True, exist_ok=True)
            ext = _extension(destination.name)
            tmp = destination.with_name(
                f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.partial{ext}"
            )
            staged.append((tmp, destination))
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        for tmp, destination in staged:
            os.replace(tmp, destination)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return [Path(d) for d in sources.values()]
