"""Broken inputs on purpose: one simulated subject (or cohort file) per kind of bad input.

A clinical cohort always holds broken exports. :func:`add_faulty_subjects` appends to a
simulated cohort one subject per fault kind in :data:`SUBJECT_FAULTS`, each a normal
simulated subject (numbered after the good ones, same acquisition) with one thing broken,
named ``sub-<kind without underscores>`` (e.g. ``sub-truncated``), and writes
``faults.tsv`` (participant_id, fault, stage, reason): the stage that must reject it and a
fragment of the reason it must give. :func:`break_participants` and :func:`bad_config`
break the cohort's own files (the whole run must then stop before any job).

The inputs of a faulty subject are written once, here; the pipeline must never modify them.
The kinds are listed with light imports only (the ``bolus`` command reads them).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

#: kind → (stage that rejects it, fragment of its reason, what is broken)
SUBJECT_FAULTS = {
    "missing_dir": ("inspect", "DICOM folder does not exist", "dicom_dir names no folder"),
    "empty_dir": ("inspect", "no DICOM images", "dicom_dir is an empty folder"),
    "localizer_only": ("inspect", "no dynamic series", "only the 3-plane localizer"),
    "truncated": ("inspect", "truncated", "one DSC file cut to half its size"),
    "corrupt": ("inspect", "unreadable DICOM", "one DSC file's header overwritten"),
    "missing_slice": ("inspect", "missing slices", "one slice of one volume deleted"),
    "echo_time": ("inspect", "EchoTime is not the same", "EchoTime changes mid-series"),
    "few_timepoints": ("convert", "time points", "a 4D NIfTI of 6 volumes"),
    "no_baseline": ("convert", "no pre-bolus baseline", "NIfTI starting after bolus arrival"),
    "nonpositive": ("convert", "no positive signal", "NIfTI signal ≤ 0 everywhere"),
    "constant": ("convert", "constant over time", "NIfTI with every volume the same"),
    "nan": ("convert", "NaN", "NIfTI with NaN voxels"),
    "no_echo_time": ("convert", "EchoTime", "NIfTI sidecar without EchoTime"),
    "reference_offset": ("metrics", "reference maps cover", "reference maps 300 mm away"),
}
#: faults of the cohort's files, not of a subject: the run stops before any job
COHORT_FAULTS = ("duplicate_id", "malformed_id", "malformed_tsv")
CONFIG_FAULTS = ("unknown_key", "bad_method", "bad_type")


def faulty_id(kind: str) -> str:
    return "sub-" + kind.replace("_", "")


def _dsc_files(dicom_dir: Path) -> list[Path]:
    return sorted(dicom_dir.glob("IM_002_*.dcm"))


def _write_nifti_series(folder: Path, signal, sim, *, echo_time: bool = True) -> Path:
    import nibabel as nib
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    affine = sim.phantom.grid.affine_ras
    image = nib.Nifti1Image(np.asarray(signal, dtype=np.float32), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_zooms(image.header.get_zooms()[:3] + (float(sim.tr_s),))
    path = folder / "dsc.nii.gz"
    nib.save(image, path)
    sidecar = {"RepetitionTime": float(sim.tr_s), "EchoTime": float(sim.te_s)}
    if not echo_time:
        del sidecar["EchoTime"]
    (folder / "dsc.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def make_faulty_subject(root, kind: str, seed: int, number: int, **acquisition) -> dict:
    """Write subject ``faulty_id(kind)`` with fault ``kind`` under ``root/sourcedata``;
    returns its participants.tsv row (paths relative to ``root``)."""
    import nibabel as nib
    import numpy as np

    from bolus.simulate.cohort import simulate_subject, synthetic_exam, write_subject, write_truth
    from bolus.simulate.dicom_writer import write_localizer_series

    if kind not in SUBJECT_FAULTS:
        raise ValueError(f"unknown fault {kind!r}; choose from {sorted(SUBJECT_FAULTS)}")
    root = Path(root)
    pid = faulty_id(kind)
    folder = root / "sourcedata" / pid
    if folder.exists():
        shutil.rmtree(folder)
    dicom_dir, truth_dir, nifti_dir = folder / "dicom", folder / "truth", folder / "nifti"
    row = {"participant_id": pid, "dicom_dir": f"sourcedata/{pid}/dicom", "reference_dir": ""}
    if kind == "missing_dir":
        return row
    if kind == "empty_dir":
        dicom_dir.mkdir(parents=True)
        return row
    exam = synthetic_exam(seed, number)
    if kind == "localizer_only":
        write_localizer_series(dicom_dir, exam=exam)
        return row
    sim = simulate_subject(seed, number, "healthy", **acquisition)
    nz = sim.signal.shape[2]
    if kind in ("truncated", "corrupt", "missing_slice", "echo_time", "reference_offset"):
        write_subject(dicom_dir, sim, exam)
        files = _dsc_files(dicom_dir)
        victim = files[3 * nz + 2]  # volume 4, slice 3
        if kind == "truncated":
            data = victim.read_bytes()
            victim.write_bytes(data[: len(data) // 2])
        elif kind == "corrupt":
            data = bytearray(victim.read_bytes())
            data[132:400] = bytes(range(256)) + bytes(12)  # file meta and header: garbage
            victim.write_bytes(bytes(data))
        elif kind == "missing_slice":
            victim.unlink()
        elif kind == "echo_time":
            import pydicom

            for path in files[len(files) // 2 :]:
                ds = pydicom.dcmread(path)
                ds.EchoTime = f"{sim.te_s * 1000 + 15:.6g}"
                ds.save_as(path, enforce_file_format=True)
        else:  # reference maps of the same head, but placed 300 mm away
            write_truth(truth_dir, sim)
            for name in ("cbf", "cbv", "mtt", "tmax", "ttp"):
                img = nib.load(truth_dir / f"{name}.nii.gz")
                affine = img.affine.copy()
                affine[:3, 3] += 300.0
                moved = nib.Nifti1Image(np.asarray(img.dataobj), affine)
                nib.save(moved, truth_dir / f"{name}.nii.gz")
            row["reference_dir"] = f"sourcedata/{pid}/truth"
        return row
    # faults of a user-supplied 4D NIfTI with its JSON sidecar
    signal = sim.signal.astype(np.float32)
    if kind == "few_timepoints":
        signal = signal[..., :6]
    elif kind == "no_baseline":
        start = int(np.searchsorted(sim.time_s, sim.parameters["arrival_s"] + 5.0))
        signal = signal[..., start:]
    elif kind == "nonpositive":
        signal = -signal
    elif kind == "constant":
        signal = np.repeat(signal[..., :1], signal.shape[-1], axis=-1)
    elif kind == "nan":
        signal[10:14, 10:14, :, 5:] = np.nan
    path = _write_nifti_series(nifti_dir, signal, sim, echo_time=kind != "no_echo_time")
    return {"participant_id": pid, "dicom_dir": "", "dsc_nifti": str(path.relative_to(root)),
            "reference_dir": ""}  # fmt: skip


def add_faulty_subjects(participants_tsv, kinds, seed: int, **acquisition) -> Path:
    """Append one subject per fault in ``kinds`` to a simulated cohort's participants.tsv
    (a ``dsc_nifti`` column is added when needed) and write ``faults.tsv`` beside it."""
    path = Path(participants_tsv)
    root = path.parent
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    columns = list(rows[0]) if rows else ["participant_id", "dicom_dir", "reference_dir"]
    ids = {r["participant_id"] for r in rows}
    number = len(rows)
    faults = []
    for kind in kinds:
        number += 1
        row = make_faulty_subject(root, kind, seed, number, **acquisition)
        row.setdefault("split", "test")
        for key in row:
            if key not in columns:
                columns.append(key)
        if row["participant_id"] not in ids:
            rows.append(row)
            ids.add(row["participant_id"])
        stage, reason, _ = SUBJECT_FAULTS[kind]
        faults.append({"participant_id": row["participant_id"], "fault": kind,
                       "stage": stage, "reason": reason})  # fmt: skip
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: r.get(c, "") for c in columns} for r in rows)
    with open(root / "faults.tsv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["participant_id", "fault", "stage", "reason"],
                                delimiter="\t", lineterminator="\n")  # fmt: skip
        writer.writeheader()
        writer.writerows(faults)
    return path


def break_participants(participants_tsv, kind: str) -> Path:
    """Break a participants.tsv in place: ``duplicate_id`` (the first subject twice),
    ``malformed_id`` (a ``sub_01``-style id), ``malformed_tsv`` (comma-separated)."""
    path = Path(participants_tsv)
    lines = path.read_text().splitlines()
    if kind == "duplicate_id":
        lines.append(lines[1])
    elif kind == "malformed_id":
        first, rest = lines[1].split("\t", 1)
        lines.append(first.replace("sub-", "sub_") + "x\t" + rest)
    elif kind == "malformed_tsv":
        lines = [line.replace("\t", ",") for line in lines]
    else:
        raise ValueError(f"unknown cohort fault {kind!r}; choose from {COHORT_FAULTS}")
    path.write_text("\n".join(lines) + "\n")
    return path


def bad_config(config: dict, kind: str) -> dict:
    """A copy of ``config`` that violates the schema: ``unknown_key``, ``bad_method``
    (svd.methods holds an unknown method) or ``bad_type`` (aif.n_voxels a string)."""
    broken = json.loads(json.dumps(config))
    if kind == "unknown_key":
        broken["output_directory"] = "results"
    elif kind == "bad_method":
        broken["svd"] = {"methods": ["ssvd", "fourier"]}
    elif kind == "bad_type":
        broken["aif"] = {"n_voxels": "ten"}
    else:
        raise ValueError(f"unknown config fault {kind!r}; choose from {CONFIG_FAULTS}")
    return broken
