"""No patient identifier leaves the pipeline; the simulator plants them so this can be shown.

The end-to-end search of every output byte (logs and Snakemake metadata included) is in
test_reliability_workflow.py; here: the simulator really writes every identifier, and one
conversion leaves none in the NIfTI (header and data) or the sidecar.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from bolus.simulate.cohort import PHI_TAGS, patient_identifiers

#: what the issue names, as DICOM keywords: name, ID, birth date, institution, accession
REQUIRED = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber")


def _subject_files(participants: Path, pid: str) -> list[Path]:
    table = pd.read_csv(participants, sep="\t").set_index("participant_id")
    return sorted((participants.parent / table.loc[pid, "dicom_dir"]).glob("*.dcm"))


def test_the_simulator_plants_every_identifier_in_every_file(small_cohort):
    import pydicom

    assert set(REQUIRED) <= set(PHI_TAGS)
    for number, pid in ((1, "sub-01"), (2, "sub-02")):
        expected = patient_identifiers(7, number)  # small_cohort is seed 7
        files = _subject_files(small_cohort, pid)
        assert len(files) > 3  # localizer + DSC series
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for keyword in PHI_TAGS:
                assert str(ds.get(keyword, "")) == expected[keyword], (path, keyword)
    first, second = patient_identifiers(7, 1), patient_identifiers(7, 2)
    assert first["PatientID"] != second["PatientID"]
    assert first["AccessionNumber"] != second["AccessionNumber"]


def test_a_converted_series_holds_no_identifier(small_cohort, tmp_path, dcm2niix):
    from bolus.io.dicom import deidentified_sidecar
    from bolus.stages import convert_subject

    table = pd.read_csv(small_cohort, sep="\t").set_index("participant_id")
    row = {"participant_id": "sub-01",
           "dicom_dir": str(small_cohort.parent / table.loc["sub-01", "dicom_dir"])}  # fmt: skip
    convert_subject(row, tmp_path / "sub-01_dsc.nii.gz", tmp_path / "sub-01_dsc.json")
    identifiers = patient_identifiers(7, 1)
    values = set(identifiers.values()) | set(identifiers["PatientName"].split("^"))
    for path in tmp_path.iterdir():
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("latin-1")
        for value in values:
            assert value not in text, f"{value!r} in {path.name}"
    # the sidecar scrubbing itself, on what dcm2niix writes when not anonymising
    sidecar = {"EchoTime": 0.03, "PatientName": "Doe^Jane", "PatientID": "MRN-1",
               "PatientBirthDate": "19500101", "InstitutionName": "X", "AccessionNumber": "A1",
               "InstitutionAddress": "Y", "AcquisitionDateTime": "2024", "PatientPosition": "HFS",
               "StationName": "S", "DeviceSerialNumber": "1"}  # fmt: skip
    assert deidentified_sidecar(sidecar) == {"EchoTime": 0.03, "PatientPosition": "HFS"}


def test_an_identifier_about_to_be_written_stops_the_subject():
    from bolus.io.dicom import assert_no_identifiers
    from bolus.io.errors import SubjectError

    with pytest.raises(SubjectError, match="sub-01: sidecar JSON: patient identifiers"):
        assert_no_identifiers('{"Note": "ACC1234567"}', {"ACC1234567"}, "sub-01", "sidecar JSON")
    assert_no_identifiers('{"EchoTime": 0.03}', {"ACC1234567"}, "sub-01", "sidecar JSON")
