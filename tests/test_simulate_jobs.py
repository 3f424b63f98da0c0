"""`bolus simulate --jobs`: subjects simulated in worker processes give the same cohort."""

from __future__ import annotations

import hashlib

import numpy as np
import pydicom

from bolus.simulate.cohort import simulate_cohort


def _digest(root):
    """{relative path: content digest} of every file, DICOM by pixel data and UIDs
    (files carry no write time, but compare what a reader uses)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if path.parent.name == "dicom":
            ds = pydicom.dcmread(path)
            key = ds.pixel_array.tobytes() + str(ds.SOPInstanceUID).encode()
            out[rel] = hashlib.sha1(key).hexdigest()
        elif path.suffix == ".gz":
            import nibabel as nib

            out[rel] = hashlib.sha1(np.asarray(nib.load(path).dataobj).tobytes()).hexdigest()
        else:
            out[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def test_parallel_simulation_writes_the_same_cohort_as_serial(tmp_path):
    options = dict(matrix=(24, 24, 3), n_timepoints=20)
    serial = simulate_cohort(tmp_path / "serial", 2, 5, **options)
    parallel = simulate_cohort(tmp_path / "parallel", 2, 5, jobs=2, **options)
    assert serial.read_text() == parallel.read_text()
    a, b = _digest(serial.parent), _digest(parallel.parent)
    assert a.keys() == b.keys() and len(a) > 2 * 20
    assert a == b
