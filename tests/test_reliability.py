"""Bad inputs fail alone and clearly: the catalogue of faults, verdicts, atomic writes.

Every kind of bad input the simulator can produce (bolus.simulate.faults) is run through the
stage that must reject it; its message must name the subject, the file and the cause.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from bolus import paths
from bolus.io.errors import SubjectError
from bolus.simulate.faults import (
    COHORT_FAULTS,
    CONFIG_FAULTS,
    SUBJECT_FAULTS,
    bad_config,
    break_participants,
    faulty_id,
)

REPO = Path(__file__).resolve().parents[1]
ACQUISITION = {"matrix": (32, 32, 6), "n_timepoints": 30}
DATA_FAULTS = [k for k, (stage, _, _) in SUBJECT_FAULTS.items() if stage in ("inspect", "convert")]


@pytest.fixture(scope="module")
def faulty_cohort(tmp_path_factory):
    """One good subject and one subject per fault kind (32×32×6, 30 volumes)."""
    from bolus.participants import read_participants
    from bolus.simulate.cohort import simulate_cohort
    from bolus.simulate.faults import add_faulty_subjects

    root = tmp_path_factory.mktemp("faulty")
    participants = simulate_cohort(root, 1, seed=5, **ACQUISITION)
    add_faulty_subjects(participants, list(SUBJECT_FAULTS), seed=5, **ACQUISITION)
    return root, read_participants(participants)


def _row(table, pid) -> dict:
    return dict(table.loc[pid].items())


def _run_until_failure(row, out: Path) -> tuple[str, str]:
    """(stage, reason) where the input is rejected, or ("", "") when it passes convert."""
    from bolus.stages import convert_subject, inspect_subject

    pid = row["participant_id"]
    record = inspect_subject(row, paths.verdict(out, pid, "inspect"))
    if record["status"] != "ok":
        return "inspect", record["reason"]
    sp = paths.SubjectPaths(out, pid)
    try:
        convert_subject(row, sp.dsc, sp.dsc_json)
    except SubjectError as exc:
        return "convert", str(exc)
    return "", ""


def test_the_good_subject_passes_every_check(faulty_cohort, tmp_path):
    _, table = faulty_cohort
    assert _run_until_failure(_row(table, "sub-01"), tmp_path) == ("", "")


@pytest.mark.parametrize("kind", DATA_FAULTS)
def test_each_bad_input_is_rejected_naming_subject_file_and_cause(faulty_cohort, tmp_path, kind):
    root, table = faulty_cohort
    pid = faulty_id(kind)
    stage, fragment, _ = SUBJECT_FAULTS[kind]
    row = _row(table, pid)
    found_stage, reason = _run_until_failure(row, tmp_path)
    assert found_stage == stage, reason
    assert reason.startswith(f"{pid}: "), reason
    # the file: the subject's DICOM folder, one file in it, or its NIfTI / sidecar
    assert str(root / "sourcedata" / pid) in reason, reason
    assert fragment in reason, reason


def test_the_damaged_file_is_named(faulty_cohort, tmp_path):
    root, table = faulty_cohort
    _, truncated = _run_until_failure(_row(table, "sub-truncated"), tmp_path)
    _, corrupt = _run_until_failure(_row(table, "sub-corrupt"), tmp_path)
    # volume 4, slice 3 of a 6-slice series: instance 3·6 + 3 = 21
    assert "IM_002_00021.dcm" in truncated and "IM_002_00021.dcm" in corrupt
    assert "4 (5 of 6)" in corrupt  # volume 4 has 5 of its 6 slices


def test_inputs_of_faulty_subjects_are_left_untouched(faulty_cohort, tmp_path):
    import hashlib

    root, table = faulty_cohort
    source = root / "sourcedata"

    def digests():
        return {
            p: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.rglob("*") if p.is_file()
        }

    before = digests()
    for kind in DATA_FAULTS:
        _run_until_failure(_row(table, faulty_id(kind)), tmp_path)
    assert digests() == before


# ----------------------------------------------------------------------------- reference grid
def _reference_setup(tmp_path, affine_change):
    """Maps on a 12×10×8 grid, a reference of the same values written on another grid."""
    from bolus.io.nifti import save_like

    rng = np.random.default_rng(3)
    shape = (12, 10, 8)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (-12, -10, -12)
    prefix = tmp_path / "maps" / "sub-01"
    ref_dir = tmp_path / "ref"
    mask = np.zeros(shape, np.uint8)
    mask[2:10, 2:8, 1:7] = 1
    save_like(mask, affine, tmp_path / "mask.nii.gz", dtype=np.uint8)
    for name in paths.MAPS:
        values = rng.uniform(1, 10, shape).astype(np.float32)
        save_like(values, affine, paths.map_prefix(prefix, "ssvd", name))
        data, ref_affine = affine_change(values, affine)
        save_like(data, ref_affine, ref_dir / f"{name}.nii.gz")
    return prefix, ref_dir


def _metrics(prefix, ref_dir, tmp_path):
    from bolus.stages import subject_metrics_table

    subject = paths.SubjectPaths.at_prefix(prefix).with_input(brain_mask=tmp_path / "mask.nii.gz")
    return subject_metrics_table(subject, ["ssvd"], reference_dir=ref_dir)


def test_reference_maps_on_another_grid_are_resampled(tmp_path):
    """The reference stored flipped left–right and with its axes permuted (LPS-like, another
    voxel order) describes the same world: resampled back, it equals the maps exactly."""

    def flip_and_permute(values, affine):
        flipped = values[::-1].transpose(1, 0, 2)
        new = affine.copy()
        new[:, 0] = -affine[:, 0]
        new[:3, 3] = affine[:3, 3] + affine[:3, 0] * (values.shape[0] - 1)
        return flipped, new[:, [1, 0, 2, 3]]

    prefix, ref_dir = _reference_setup(tmp_path, flip_and_permute)
    table = _metrics(prefix, ref_dir, tmp_path)
    brain = table.query("region == 'brain' and metric == 'mae'")
    assert np.allclose(brain["value"], 0.0, atol=1e-6)


def test_reference_maps_outside_the_field_of_view_give_a_clear_error(tmp_path):
    def moved(values, affine):
        new = affine.copy()
        new[:3, 3] += 300.0
        return values, new

    prefix, ref_dir = _reference_setup(tmp_path, moved)
    with pytest.raises(SubjectError, match=r"sub-01: .*ref: the reference maps cover 0 %"):
        _metrics(prefix, ref_dir, tmp_path)


# ----------------------------------------------------------------------------- cohort files
@pytest.mark.parametrize(
    "kind, message",
    [
        ("duplicate_id", "duplicated participant_id: sub-01"),
        ("malformed_id", "sub_01x (participant_id): 'sub_01x' does not match"),
        ("malformed_tsv", "not a tab-separated table"),
    ],
)
def test_a_malformed_participants_file_is_refused_naming_it(tmp_path, kind, message):
    from bolus.participants import read_participants

    sheet = tmp_path / "participants.tsv"
    sheet.write_text("participant_id\tdicom_dir\nsub-01\ta\nsub-02\tb\n")
    break_participants(sheet, kind)
    assert kind in COHORT_FAULTS
    with pytest.raises(ValueError) as caught:
        read_participants(sheet)
    assert str(sheet) in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    "kind, key", [("unknown_key", "output_directory"), ("bad_method", "svd.methods.1"),
                  ("bad_type", "aif.n_voxels")],
)  # fmt: skip
def test_a_config_violating_the_schema_names_the_key(kind, key):
    from bolus.config import validate_config

    assert kind in CONFIG_FAULTS
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_config(bad_config({"participants": "p.tsv"}, kind))


def _snakemake(*args, cwd):
    exe = Path(sys.executable).with_name("snakemake")
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(exe), "--snakefile", str(REPO / "Snakefile"), "--directory", str(cwd), "--cores", "1",
         *args], capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_a_bad_config_or_participants_file_stops_the_run_before_any_job(tmp_path):
    sheet = tmp_path / "participants.tsv"
    sheet.write_text("participant_id\tdicom_dir\nsub-01\ta\n")
    config = {"participants": str(sheet), "output_dir": str(tmp_path / "results")}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad_config(config, "bad_method")))
    proc = _snakemake("--configfile", str(tmp_path / "bad.yaml"), cwd=tmp_path)
    assert proc.returncode != 0 and "fourier" in proc.stderr + proc.stdout
    break_participants(sheet, "duplicate_id")
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(config))
    proc = _snakemake("--configfile", str(tmp_path / "ok.yaml"), cwd=tmp_path)
    assert proc.returncode != 0
    assert "duplicated participant_id: sub-01" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()  # no job ran


# ----------------------------------------------------------------------------- verdicts
def _fake_snakemake(tmp_path, stage, previous=None):
    out = paths.verdict(tmp_path, "sub-07", stage)
    return SimpleNamespace(
        wildcards=SimpleNamespace(subject="sub-07"),
        input=SimpleNamespace(previous=str(previous)) if previous else SimpleNamespace(),
        output=SimpleNamespace(verdict=str(out)),
        log=[str(paths.log_file(tmp_path, "sub-07", stage))],
        config={"output_dir": str(tmp_path)},
    )


def test_a_data_failure_becomes_a_failed_verdict_and_the_job_succeeds(tmp_path):
    from bolus.qc import read_verdict
    from bolus.smk import run_stage

    def bad_data():
        raise SubjectError("sub-07", "/data/sub-07/dsc.nii.gz", "only 4 time points")

    record = run_stage(_fake_snakemake(tmp_path, "convert"), "convert", bad_data)
    assert record["status"] == "failed"
    verdict = read_verdict(paths.verdict(tmp_path, "sub-07", "convert"))
    assert verdict["reason"] == "sub-07: /data/sub-07/dsc.nii.gz: only 4 time points"
    log = paths.log_file(tmp_path, "sub-07", "convert").read_text()
    assert log.rstrip().endswith("only 4 time points")
    # the next stage does nothing and says why
    following = _fake_snakemake(
        tmp_path, "preprocess", paths.verdict(tmp_path, "sub-07", "convert")
    )
    ran = []
    record = run_stage(following, "preprocess", lambda: ran.append(1))
    assert record["status"] == "skipped" and not ran


def test_a_bug_still_fails_the_job_loudly(tmp_path):
    from bolus.smk import run_stage

    def bug():
        raise KeyError("EchoTime")

    with pytest.raises(KeyError):
        run_stage(_fake_snakemake(tmp_path, "perfusion"), "perfusion", bug)
    assert not paths.verdict(tmp_path, "sub-07", "perfusion").exists()
    assert "KeyError" in paths.log_file(tmp_path, "sub-07", "perfusion").read_text()


def test_qc_lists_each_stage_reached_and_one_reason_per_excluded_subject(tmp_path):
    from bolus.qc import exclusions, qc_table, summary, write_verdict

    for stage in paths.STAGES:
        write_verdict(paths.verdict(tmp_path, "sub-01", stage), "sub-01", stage, "ok")
    write_verdict(paths.verdict(tmp_path, "sub-02", "inspect"), "sub-02", "inspect", "ok")
    write_verdict(paths.verdict(tmp_path, "sub-02", "convert"), "sub-02", "convert", "failed",
                  "sub-02: x.nii.gz: NaN")  # fmt: skip
    write_verdict(paths.verdict(tmp_path, "sub-02", "preprocess"), "sub-02", "preprocess",
                  "skipped", "convert failed")  # fmt: skip
    # a leftover verdict of an earlier run, after the failure: ignored
    write_verdict(paths.verdict(tmp_path, "sub-02", "metrics"), "sub-02", "metrics", "ok")
    qc = qc_table(tmp_path, ["sub-01", "sub-02", "sub-03"])
    assert list(qc.columns) == ["participant_id", "stage", "status", "reason"]
    assert list(qc.query("participant_id == 'sub-01'")["status"]) == ["ok"] * 5
    assert list(qc.query("participant_id == 'sub-02'")["stage"]) == ["inspect", "convert"]
    excluded = exclusions(qc).set_index("participant_id")
    assert excluded.loc["sub-02", "reason"] == "sub-02: x.nii.gz: NaN"
    assert excluded.loc["sub-03", "status"] == "missing"
    qc.to_csv(paths.qc_table(tmp_path), sep="\t", index=False)
    n_failed, n_total, text = summary(tmp_path)
    assert (n_failed, n_total) == (2, 3)
    assert "2 of 3 subjects failed" in text and str(paths.qc_table(tmp_path)) in text


# ----------------------------------------------------------------------------- atomic writes
def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    from bolus.io import atomic

    target = tmp_path / "sub-01_aif.tsv"
    atomic.write_text(target, "time\tconcentration\n")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "time\tconcentration\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_nifti_writes_are_atomic_and_keep_the_compression(tmp_path, monkeypatch):
    from bolus.io.nifti import save_like

    target = tmp_path / "sub-01_desc-ssvd_cbf.nii.gz"
    save_like(np.ones((4, 4, 4)), np.eye(4), target)
    assert target.read_bytes()[:2] == b"\x1f\x8b"  # gzip, though written under a temp name
    seen = []
    real_save = nib.save

    def spy(img, name):
        seen.append(Path(name))
        real_save(img, name)

    monkeypatch.setattr(nib, "save", spy)
    save_like(np.zeros((4, 4, 4)), np.eye(4), target)
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".") and seen[0] != target
    assert np.all(nib.load(target).get_fdata() == 0)


def test_temporaries_of_a_killed_writer_are_removed(tmp_path):
    from bolus.io.atomic import remove_stale_partials

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".sub-01_dsc.nii.gz.{dead}.0123abcd.partial.nii.gz"
    live = tmp_path / f".sub-01_dsc.json.{os.getpid()}.0123abcd.partial.json"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    assert remove_stale_partials(tmp_path) == [stale]
    assert live.exists()


def test_study_tables_list_the_exclusions(tmp_path):
    from bolus.evaluate.aggregate import write_study_tables
    from bolus.qc import exclusions, qc_table, write_verdict

    write_verdict(paths.verdict(tmp_path, "sub-02", "inspect"), "sub-02", "inspect", "failed",
                  "sub-02: /d: DICOM folder does not exist")  # fmt: skip
    table = pd.DataFrame(
        {"participant_id": ["sub-01"], "method": ["ssvd"], "map": ["cbf"], "region": ["brain"],
         "metric": ["mae"], "value": [1.0]}
    )  # fmt: skip
    excluded = exclusions(qc_table(tmp_path, ["sub-02"]))
    write_study_tables(table, tmp_path, excluded=excluded)
    text = paths.study_markdown(tmp_path).read_text()
    assert "## Excluded subjects (1)" in text and "DICOM folder does not exist" in text


# ----------------------------------------------------------------------------- signal checks
def _bolus_series(shape=(6, 5, 4), n=30, tr=1.5):
    """Signal 500 with a 40 % dip from frame 10 (a bolus with a baseline)."""
    t = np.arange(n) * tr
    dip = np.where(t >= 15, 0.4 * np.exp(-((t - 19) ** 2) / 8), 0.0)
    return np.broadcast_to(500 * (1 - dip), shape + (n,)).copy(), t


def test_a_series_with_a_baseline_and_a_bolus_passes_the_signal_checks():
    from bolus.perfusion.checks import check_signal

    data, t = _bolus_series()
    check_signal(data, t, "sub-01", "dsc.nii.gz")


def test_negative_magnitude_signal_is_refused_for_mr_but_not_for_ct():
    from bolus.perfusion.checks import check_signal

    data, t = _bolus_series()
    data[0, 0, 0, :] = -5.0
    with pytest.raises(SubjectError, match=r"sub-01: dsc.nii.gz: negative signal in 1 voxel"):
        check_signal(data, t, "sub-01", "dsc.nii.gz")
    check_signal(data - 1000, t, "sub-01", "ctp.nii.gz", modality="ctp")  # HU may be < 0


def test_no_arterial_input_function_is_a_subject_failure(tmp_path):
    """An empty brain mask leaves no voxel to choose an AIF from: the perfusion stage fails
    for this subject with its reason, instead of with a bare ValueError."""
    from bolus.io.nifti import save_like
    from bolus.stages import perfusion_subject

    data, t = _bolus_series()
    save_like(data, np.eye(4), tmp_path / "sub-05_desc-mc_dsc.nii.gz")
    save_like(np.zeros(data.shape[:3]), np.eye(4), tmp_path / "mask.nii.gz", dtype=np.uint8)
    sidecar = {"EchoTime": 0.03, "VolumeTiming": t.tolist()}
    (tmp_path / "dsc.json").write_text(json.dumps(sidecar))
    subject = paths.SubjectPaths.at_prefix(tmp_path / "sub-05").with_input(
        mc_dsc=tmp_path / "sub-05_desc-mc_dsc.nii.gz", dsc_json=tmp_path / "dsc.json",
        brain_mask=tmp_path / "mask.nii.gz",
    )  # fmt: skip
    with pytest.raises(SubjectError, match=r"^sub-05: .*no arterial input function: the mask"):
        perfusion_subject(subject)
