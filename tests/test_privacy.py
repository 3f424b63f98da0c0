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


# ------------------------------------------------- identifier values that collide with scanner text
@pytest.fixture(scope="module")
def tiny_sim():
    from bolus.simulate.cohort import simulate_subject

    return simulate_subject(7, 1, matrix=(16, 16, 3), n_timepoints=12)


def _export(folder: Path, sim, **identifiers) -> list[Path]:
    """A Siemens-convention export whose identifiers are the simulated ones with
    ``identifiers`` replacing some (model 'Avanto', series 'ep2d_perf', sequence
    '*epfid2d1_64')."""
    import dataclasses

    from bolus.simulate.dicom_writer import synthetic_exam, write_dsc_series

    exam = synthetic_exam(7, 1)
    exam = dataclasses.replace(exam, identifiers={**exam.identifiers, **identifiers})
    return write_dsc_series(folder, sim.signal, sim.phantom.grid, tr_s=sim.tr_s,
                            te_s=sim.te_s, exam=exam, vendor="siemens")  # fmt: skip


@pytest.mark.parametrize(
    "collision",
    [
        {"StationName": "Avanto"},  # = ManufacturerModelName (Canon/Toshiba 'Galan 3T')
        {"PatientName": "ep2d_perf"},  # anonymised to the SeriesDescription
        {"PatientName": "dcm2niix"},  # = the converter named in ConversionSoftware
        {"PatientID": "*epfid2d1_64"},  # = SequenceName
    ],
    ids=["station=model", "name=series", "name=converter", "id=sequence"],
)
def test_identifier_equal_to_scanner_or_protocol_text_converts(tiny_sim, tmp_path, dcm2niix,
                                                               collision):  # fmt: skip
    """An identifier field holding the scanner's, the protocol's or the converter's own text
    identifies nobody: the series converts, and the other identifiers are still absent."""
    from bolus.io.dicom import convert_dicom_series

    _export(tmp_path / "dicom", tiny_sim, **collision)
    convert_dicom_series(tmp_path / "dicom", tmp_path / "out" / "d.nii.gz",
                         tmp_path / "out" / "d.json", subject="sub-01")  # fmt: skip
    text = (tmp_path / "out" / "d.json").read_text()
    for keyword, value in patient_identifiers(7, 1).items():
        if keyword not in collision:
            assert value not in text, keyword


@pytest.mark.parametrize("tag", ["ImageComments", "ProtocolName"])
def test_a_name_planted_in_free_text_is_refused_naming_the_tag(tiny_sim, tmp_path, dcm2niix, tag):
    """A patient name copied into a free-text field that reaches the sidecar is refused; the
    message names the DICOM tag it came from and the output key, never the value, and
    nothing is written."""
    import pydicom

    from bolus.io.dicom import convert_dicom_series
    from bolus.io.errors import SubjectError

    name = patient_identifiers(7, 1)["PatientName"]
    for path in _export(tmp_path / "dicom", tiny_sim):
        ds = pydicom.dcmread(path)
        setattr(ds, tag, f"perfusion {name}")
        ds.save_as(path)
    out = tmp_path / "out"
    with pytest.raises(SubjectError) as caught:
        convert_dicom_series(tmp_path / "dicom", out / "d.nii.gz", out / "d.json",
                             subject="sub-01")  # fmt: skip
    message = str(caught.value)
    assert message.startswith("sub-01: sidecar JSON: patient identifiers")
    assert f"PatientName in sidecar JSON key '{tag}'" in message
    for part in [name, *name.split("^")]:
        assert part not in message
    assert not out.exists() or list(out.iterdir()) == []


def test_identifier_values_leave_out_scanner_text_and_unspecific_values(tmp_path, tiny_sim):
    """What is searched: specific values only, mapped to their tag; never a value equal to
    the model, series or sequence text of the same header, nor a short number."""
    from bolus.io.dicom import identifying_values

    files = _export(tmp_path, tiny_sim, StationName="Avanto", DeviceSerialNumber="9143",
                    PatientID="*epfid2d1_64")  # fmt: skip
    values = identifying_values(files)
    planted = patient_identifiers(7, 1)
    assert values[planted["PatientName"]] == "PatientName"
    assert values[planted["AccessionNumber"]] == "AccessionNumber"
    assert "Avanto" not in values and "9143" not in values and "*epfid2d1_64" not in values
