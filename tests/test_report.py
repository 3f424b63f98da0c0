"""End to end: a tiny workflow run once, then `snakemake --report`; the report embeds every
study figure and table and the figures of the first report.embedded_subjects subjects, and the
study files hold the paired comparison and the exclusions."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bolus import paths

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ("sub-01", "sub-02", "sub-03")

pytestmark = pytest.mark.slow


def snakemake_executable() -> str:
    found = Path(sys.executable).with_name("snakemake")
    if found.exists():
        return str(found)
    if shutil.which("snakemake") is None:
        pytest.skip("snakemake is not installed")
    return shutil.which("snakemake")


def snakemake(work: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [
            snakemake_executable(),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            "--configfile",
            str(work / "config.yaml"),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """3 simulated subjects (healthy, stroke, tumour; sites A/B) and sub-04 whose folder
    holds only a localizer; motion correction off to keep the run short (the motion QC
    plot is still drawn from the all-zero motion table). The workflow runs once, then
    ``snakemake --report results/report.html``."""
    from bolus.simulate.cohort import simulate_cohort, write_localizer_series

    work = tmp_path_factory.mktemp("report")
    participants = simulate_cohort(work / "cohort", 3, seed=5, matrix=(40, 40, 6), n_timepoints=36)
    write_localizer_series(work / "cohort" / "sourcedata" / "sub-04" / "dicom", seed=4)
    columns = pd.read_csv(participants, sep="\t").columns
    row = {c: "" for c in columns}
    row.update(participant_id="sub-04", dicom_dir="sourcedata/sub-04/dicom", split="test")
    with open(participants, "a") as fh:
        fh.write("\t".join(str(row[c]) for c in columns) + "\n")
    config = {
        "participants": str(participants),
        "output_dir": "results",
        "motion": {"enabled": False},
        "report": {"embedded_subjects": 3},  # sub-04's figures written, not embedded
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(work, "--profile", str(REPO / "profiles" / "local"), "--cores", "2")
    # exit status 3: the study tables are written, and a subject (sub-04) was excluded
    assert run.returncode == 3, run.stderr[-4000:]
    report = snakemake(work, "--report", "results/report.html")
    assert report.returncode == 0, report.stderr[-4000:]
    return work / "results"


def embedded_results(report_html: Path) -> dict:
    """The report's results table: path → {name, mime_type, data_uri, caption, ...}.

    Snakemake 9 writes a self-contained .html (a .zip only when asked for one) whose
    results are a JSON object in the page's script, each file as a base64 data URI."""
    text = report_html.read_text(encoding="utf-8")
    match = re.search(r"var results = (\{.*?\});\n", text, re.S)
    assert match, "no results table in the report"
    return json.loads(match.group(1))


def decoded(entry: dict) -> bytes:
    return base64.b64decode(entry["data_uri"].split("base64,", 1)[1])


def test_report_embeds_every_figure_and_table(reported):
    results = embedded_results(paths.report_html(reported))
    by_name = {Path(p).name: entry for p, entry in results.items()}
    expected = [paths.study_figure(reported, name) for name in paths.STUDY_FIGURES]
    expected += [
        paths.subject_figure(reported, s, k)
        for s in SUBJECTS
        for k in (*paths.SUBJECT_FIGURES, paths.CLINICAL_SUBJECT_FIGURE)
    ]
    expected += [paths.report_table(reported, n) for n in ("study", "paired", "excluded")]
    expected += [paths.report_table(reported, "clinical")]
    expected += [paths.study_figure(reported, paths.CLINICAL_STUDY_FIGURE)]
    for path in expected:
        assert path.name in by_name, f"{path.name} not in the report"
        entry = by_name[path.name]
        content = decoded(entry)
        assert content == path.read_bytes(), f"{path.name}: embedded copy differs"
        if path.suffix == ".png":
            assert entry["mime_type"] == "image/png" and content.startswith(b"\x89PNG")
        assert entry["caption"].strip(), f"{path.name} has no caption"
    # sub-04 failed its inspection: its figures say so instead of showing maps; beyond
    # report.embedded_subjects (3) they are written but not embedded
    for kind in (*paths.SUBJECT_FIGURES, paths.CLINICAL_SUBJECT_FIGURE):
        notice = paths.subject_figure(reported, "sub-04", kind)
        assert notice.exists() and notice.name not in by_name
    workflow_text = paths.report_html(reported).read_text(encoding="utf-8")
    assert "bolus" in workflow_text and "Wilcoxon" in workflow_text


def test_study_files_hold_strata_paired_comparison_and_exclusions(reported):
    study = pd.read_csv(paths.study_table(reported), sep="\t", na_values="n/a")
    assert list(study.columns[:2]) == ["group", "site"]
    assert set(study["group"]) == {"all", "healthy", "stroke", "tumour"}
    assert {"brain", "gm", "wm", "lesion"} <= set(study["region"])
    assert "scc" in set(study["metric"]) and "auc" in set(study["metric"])
    paired = pd.read_csv(paths.paired_table(reported), sep="\t", na_values="n/a")
    assert set(paired["method"]) == {"ssvd", "csvd"} and set(paired["baseline"]) == {"osvd"}
    brain = paired.query("region == 'brain' and metric == 'nrmse'")
    assert (brain["n_pairs"] == 3).all()
    assert ((brain["p_holm"] >= brain["p"]) & (brain["p_holm"] <= 1)).all()
    markdown = paths.study_markdown(reported).read_text()
    assert "## Excluded subjects" in markdown and "sub-04" in markdown
    assert "no dynamic series" in markdown
    assert "## Paired comparison with osvd" in markdown
    excluded = paths.report_table(reported, "excluded").read_text()
    assert "sub-04" in excluded and "sub-01" not in excluded


def test_the_lesion_of_the_stroke_subject_is_found(reported):
    """sub-02 is the stroke (core + penumbra, Tmax well above 6 s): every SVD method's Tmax
    separates the reference lesion from the rest of the brain far better than chance (AUC
    0.5); the threshold is loose because the tiny 40×40×6 grid at 36 frames leaves few
    lesion voxels and a coarse time axis."""
    subjects = pd.read_csv(paths.subjects_table(reported), sep="\t", na_values="n/a")
    auc = subjects.query("participant_id == 'sub-02' and metric == 'auc'")
    assert len(auc) == 3
    assert (auc["value"] > 0.7).all(), auc
