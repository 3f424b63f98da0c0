"""End to end: the Snakemake workflow over a simulated cohort with one broken subject."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bolus import paths
from bolus.perfusion.methods import METHODS as SVD_METHODS

REPO = Path(__file__).resolve().parents[1]
MAP_METRICS = ("mae", "rmse", "nrmse", "ssim", "psnr", "pcc")
LESION_METRICS = ("dice", "iou", "hd95")


def snakemake_executable() -> str:
    found = Path(sys.executable).with_name("snakemake")
    if found.exists():
        return str(found)
    if shutil.which("snakemake") is None:
        pytest.skip("snakemake is not installed")
    return shutil.which("snakemake")


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """3 simulated subjects (healthy, stroke, tumour) + sub-04 whose folder holds only a
    localizer; the whole workflow runs once for every test in this module."""
    from bolus.simulate.cohort import simulate_cohort, write_localizer_series

    work = tmp_path_factory.mktemp("study")
    participants = simulate_cohort(work / "cohort", 3, seed=11, matrix=(48, 48, 8), n_timepoints=40)
    write_localizer_series(work / "cohort" / "sourcedata" / "sub-04" / "dicom", seed=4)
    with open(participants, "a") as fh:
        columns = pd.read_csv(participants, sep="\t").columns
        row = {c: "" for c in columns}
        row.update(participant_id="sub-04", dicom_dir="sourcedata/sub-04/dicom", split="test")
        fh.write("\t".join(str(row[c]) for c in columns) + "\n")
    config = {"participants": str(participants), "output_dir": str(work / "results")}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [
            snakemake_executable(),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            "--profile",
            str(REPO / "profiles" / "local"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    return work, proc


pytestmark = pytest.mark.slow


def test_workflow_finishes_despite_a_broken_subject(finished_study):
    work, proc = finished_study
    assert proc.returncode == 3, proc.stderr[-4000:]  # 3: the study is written, sub-04 excluded
    assert "1 of 4 subjects failed" in proc.stderr
    qc = pd.read_csv(paths.qc_table(work / "results"), sep="\t")
    qc = qc.groupby("participant_id").tail(1).set_index("participant_id")  # last stage reached
    assert list(qc.loc[["sub-01", "sub-02", "sub-03"], "status"]) == ["ok"] * 3
    failed = qc.loc["sub-04"]
    assert failed["status"] == "failed" and failed["stage"] == "inspect"
    assert failed["reason"].startswith("sub-04:")
    assert "no dynamic series" in failed["reason"] and "localizer" in failed["reason"]


def test_every_subject_has_the_documented_outputs(finished_study):
    work, _ = finished_study
    for pid in ("sub-01", "sub-02", "sub-03"):
        sp = paths.SubjectPaths(work / "results", pid)
        for path in (
            sp.dsc,
            sp.dsc_json,
            sp.mc_dsc,
            sp.motion_tsv,
            sp.brain_mask,
            sp.conc,
            sp.aif_tsv,
            sp.aif_mask,
        ):
            assert path.exists(), path
        for method in SVD_METHODS:
            for path in sp.maps(method).values():
                assert path.exists(), path
    assert not (work / "results" / "sub-04" / "perf").exists()


def test_study_table_has_every_method_map_and_metric(finished_study):
    work, _ = finished_study
    study = pd.read_csv(paths.study_table(work / "results"), sep="\t", na_values="n/a")
    whole = study[
        (study["group"] == "all") & (study["site"] == "all") & (study["region"] == "brain")
    ]
    for method in SVD_METHODS:
        for name in paths.MAPS:
            metrics = set(whole.query("method == @method and map == @name")["metric"])
            assert set(MAP_METRICS) <= metrics, (method, name, metrics)
        tmax = set(whole.query("method == @method and map == 'tmax'")["metric"])
        assert set(LESION_METRICS) <= tmax
    assert (whole["n"] <= 3).all() and (whole.query("metric == 'mae'")["n"] == 3).all()
    assert paths.study_markdown(work / "results").read_text().strip()
    subjects = pd.read_csv(paths.subjects_table(work / "results"), sep="\t")
    assert set(subjects["participant_id"]) == {"sub-01", "sub-02", "sub-03"}


def test_no_patient_identifier_reaches_any_output(finished_study):
    """The simulator writes a name, ID, birth date and institution into every DICOM file."""
    import pydicom

    work, _ = finished_study
    some_file = next(
        p for p in (work / "cohort" / "sourcedata" / "sub-01" / "dicom").rglob("*") if p.is_file()
    )
    ds = pydicom.dcmread(some_file, stop_before_pixels=True)
    identifiers = [
        str(ds.PatientName),
        str(ds.PatientID),
        str(ds.PatientBirthDate),
        str(ds.InstitutionName),
    ]
    assert all(identifiers)
    for path in (work / "results").rglob("*"):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)[:352]  # the NIfTI header and extensions' start
        text = raw.decode("latin-1")
        for identifier in identifiers:
            assert identifier not in text, f"{identifier!r} found in {path}"


def test_maps_agree_with_the_simulated_truth(finished_study):
    """The chain end to end lines maps up with the truth: oSVD CBF correlates with it voxel by
    voxel (0.80 on the 64×64×12 demo; a flipped or shifted map gives about 0), and CBV, the
    noise-robust area ratio, is within 80 % NRMSE (0.47 on the demo; the rest is noise at
    SNR 100 and partial volume at 4.6 mm)."""
    work, _ = finished_study
    study = pd.read_csv(paths.study_table(work / "results"), sep="\t", na_values="n/a")
    whole = study[(study["group"] == "all") & (study["site"] == "all")]
    brain = whole[whole["region"] == "brain"].set_index(["method", "map", "metric"])["median"]
    assert brain[("osvd", "cbf", "pcc")] > 0.5
    for method in SVD_METHODS:
        assert brain[(method, "cbv", "nrmse")] < 0.8


def test_clinical_readouts_of_every_completed_subject_and_method(finished_study):
    """metrics/clinical.tsv: a row per completed subject × method (the truth maps' as
    ``reference``), the documented columns; sub-04, excluded at inspection, appears nowhere
    in the clinical outputs; the agreement table compares every SVD method with the
    reference, and study.md carries the clinical section."""
    from bolus.evaluate import clinical
    from bolus.evaluate.clinical_files import TABLE_COLUMNS

    work, _ = finished_study
    results = work / "results"
    table = pd.read_csv(paths.clinical_table(results), sep="\t", na_values="n/a")
    assert list(table.columns) == [*TABLE_COLUMNS, *clinical.readout_columns()]
    expected = {(s, m) for s in ("sub-01", "sub-02", "sub-03")
                for m in (*SVD_METHODS, "reference")}  # fmt: skip
    assert set(zip(table["participant_id"], table["method"], strict=True)) == expected
    assert len(table) == len(expected)
    assert (table["reference_region_source"] == "labels").all()
    stroke = table[(table["participant_id"] == "sub-02") & (table["method"] == "reference")]
    assert stroke["core_ml"].item() > 0 and stroke["lesion_side"].item() in ("left", "right")
    agreement = pd.read_csv(paths.clinical_agreement(results), sep="\t", na_values="n/a")
    assert set(agreement["method"]) == set(SVD_METHODS)
    assert {"core_ml", "tmax_gt6s_ml", "target_mismatch"} <= set(agreement["readout"])
    for name in ("clinical_agreement.tsv", "clinical.html"):
        assert "sub-04" not in (results / "metrics" / name).read_text()
    assert "sub-04" not in paths.clinical_table(results).read_text()
    assert "## Clinical readouts" in paths.study_markdown(results).read_text()
    sp = paths.SubjectPaths(results, "sub-02")
    assert sp.reference_region_mask.exists() and sp.clinical_tsv.exists()
    for method in SVD_METHODS:
        assert sp.map(method, "rcbv").exists() and sp.map(method, "rcbf").exists()
    assert paths.subject_figure(results, "sub-02", paths.CLINICAL_SUBJECT_FIGURE).exists()
    assert paths.study_figure(results, paths.CLINICAL_STUDY_FIGURE).exists()
