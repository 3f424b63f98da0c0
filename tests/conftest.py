"""Shared fixtures: small simulated cohorts, built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared/data/dcm_qa_nih beside the checkout (or beside the folder of worktrees), or
# $BOLUS_DCM_QA: read in place, never copied.
_DCM_QA_CANDIDATES = [
    Path(p)
    for p in (
        os.environ.get("BOLUS_DCM_QA", ""),
        REPO.parent / "shared" / "data" / "dcm_qa_nih",
        REPO.parents[1] / "shared" / "data" / "dcm_qa_nih",
    )
    if str(p)
]
DCM_QA = next((p for p in _DCM_QA_CANDIDATES if (p / "In").is_dir()), _DCM_QA_CANDIDATES[-1])


@pytest.fixture(scope="session")
def dcm2niix() -> str:
    """The dcm2niix executable; skips the test where it is not installed."""
    from bolus.io.dicom import dcm2niix_executable

    try:
        return dcm2niix_executable()
    except FileNotFoundError:
        pytest.skip("dcm2niix is not installed")


@pytest.fixture(scope="session")
def dcm_qa() -> Path:
    """Real GE and Siemens EPI DICOM with reference conversions (read in place, never copied)."""
    if not (DCM_QA / "In").is_dir():
        pytest.skip(f"real scanner DICOM not found at {DCM_QA}")
    return DCM_QA


# Public dcm2niix validation exports (github.com/neurolabusc/dcm_qa_*), fetched by whoever runs
# the tests into a cache OUTSIDE the repository, one folder per repository with its In/ and
# Ref/ (DICOM gunzipped: ``gunzip -r In``): $BOLUS_DCM_QA_CACHE, else ../cache beside the
# checkout or beside the folder of worktrees. Never copied into the project.
_CACHE_CANDIDATES = [
    Path(p)
    for p in (
        os.environ.get("BOLUS_DCM_QA_CACHE", ""),
        REPO.parent / "cache",
        REPO.parents[1] / "cache",
    )
    if str(p)
]


@pytest.fixture(scope="session")
def public_export():
    """``public_export("dcm_qa_enh", "In/Siemens/XA10")``: that folder of a fetched public
    dcm2niix validation repository; skips the test when it is not there."""

    def folder(repository: str, *parts: str) -> Path:
        for root in _CACHE_CANDIDATES:
            path = root.joinpath(repository, *parts)
            if path.exists():
                return path
        pytest.skip(
            f"public export {repository}/{'/'.join(parts)} not fetched (BOLUS_DCM_QA_CACHE)"
        )

    return folder


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """Two simulated subjects (healthy, stroke) on a reduced grid; returns participants.tsv."""
    from bolus.simulate.cohort import simulate_cohort

    out = tmp_path_factory.mktemp("cohort")
    return simulate_cohort(
        out, 2, seed=7, matrix=(48, 48, 8), n_timepoints=40, pathologies=("healthy", "stroke")
    )


@pytest.fixture
def clean_copy(tmp_path):
    """Copy a folder into tmp_path (for tests that must show inputs stay untouched)."""

    def copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return copy
