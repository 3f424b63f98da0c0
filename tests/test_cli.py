"""The `bolus maps` command: a concentration series and an AIF table in, maps out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bolus import paths
from bolus.cli import main
from bolus.config import PerfusionConstants
from bolus.io.nifti import load_volume, save_like
from bolus.simulate import kinetics


@pytest.fixture
def conc_and_aif(tmp_path):
    """A 4×4×2 volume of identical noise-free tissue curves (CBF 60, MTT 4 s)."""
    fine = np.arange(0, 90, 0.1)
    aif = kinetics.arterial_input(fine, leakage_fraction=0.0)
    tissue = kinetics.tissue_concentration(
        fine,
        aif[None],
        np.array([60.0]),
        np.array([4.0]),
        np.array([1.0]),
        PerfusionConstants.from_config(),
    )[0]
    step = 15  # TR 1.5 s
    times = fine[::step]
    conc = np.broadcast_to(tissue[::step], (4, 4, 2, times.size)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    save_like(conc, affine, tmp_path / "conc.nii.gz")
    pd.DataFrame({"time": times, "concentration": aif[::step]}).to_csv(
        tmp_path / "aif.tsv", sep="\t", index=False
    )
    return tmp_path


def test_maps_command_writes_every_map_with_units(conc_and_aif):
    out = conc_and_aif / "sub-01"
    code = main(
        [
            "maps",
            str(conc_and_aif / "conc.nii.gz"),
            str(conc_and_aif / "aif.tsv"),
            str(out),
            "--method",
            "csvd",
        ]
    )
    assert code == 0
    maps = {name: load_volume(paths.map_prefix(out, "csvd", name))[0] for name in paths.MAPS}
    # CBV is the area ratio: 4 ml/100 g within 5 % (sampling at TR 1.5 s, finite window)
    assert np.allclose(maps["cbv"], 4.0, rtol=0.05)
    # CBF is underestimated by truncated SVD on a 1.5 s grid, never over-estimated here
    assert np.all((maps["cbf"] > 0.4 * 60) & (maps["cbf"] < 60))
    np.testing.assert_allclose(maps["mtt"], 60 * maps["cbv"] / maps["cbf"], rtol=1e-5)
    _, affine = load_volume(paths.map_prefix(out, "csvd", "cbf"))
    np.testing.assert_allclose(affine, np.diag([2.0, 2.0, 5.0, 1.0]))


def test_maps_command_reports_mismatched_timing(conc_and_aif, capsys):
    table = pd.read_csv(conc_and_aif / "aif.tsv", sep="\t").iloc[:-3]
    table.to_csv(conc_and_aif / "short.tsv", sep="\t", index=False)
    code = main(
        [
            "maps",
            str(conc_and_aif / "conc.nii.gz"),
            str(conc_and_aif / "short.tsv"),
            str(conc_and_aif / "x"),
            "--method",
            "ssvd",
        ]
    )
    assert code == 2
    assert "time points" in capsys.readouterr().err


def test_convert_command_names_a_missing_dicom_folder(tmp_path, capsys):
    code = main(
        ["convert", str(tmp_path / "nowhere"), str(tmp_path / "sub-05"), "--subject", "sub-05"]
    )
    assert code == 2
    assert "sub-05:" in capsys.readouterr().err


def test_simulate_command_passes_only_given_options(tmp_path):
    main(["simulate", str(tmp_path), "--subjects", "1", "--seed", "3", "--matrix", "24", "24", "4",
          "--timepoints", "6", "--snr", "50"])  # fmt: skip
    info = json.loads(
        (tmp_path / "sourcedata" / "sub-01" / "truth" / "simulation.json").read_text()
    )
    assert info["acquisition_options"] == {"matrix": [24, 24, 4], "n_timepoints": 6, "snr": 50.0}
    assert len(list((tmp_path / "sourcedata" / "sub-01" / "dicom").glob("*"))) == 3 + 4 * 6


def test_tof_command_converts_and_registers_onto_the_dsc_grid(tmp_path):
    """``bolus tof``: the TOF DICOM series of a simulated subject → the de-identified NIfTI
    in its own grid, and the TOF registered onto the DSC grid (same shape and affine as the
    DSC), nothing else written beside them."""
    pytest.importorskip("ants")
    from bolus.simulate.cohort import simulate_subject, write_subject_tof
    from bolus.simulate.dicom_writer import PHI_TAGS, synthetic_exam

    sim = simulate_subject(4, 1, "stroke", matrix=(40, 40, 8), n_timepoints=10)
    exam = synthetic_exam(4, 1)
    write_subject_tof(tmp_path / "src", sim, exam, 4, 1)
    affine = sim.phantom.grid.affine_ras
    save_like(sim.signal.astype(np.float32), affine, tmp_path / "mc.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    code = main(["tof", str(tmp_path / "src" / "tof_dicom"), str(tmp_path / "mc.nii.gz"),
                 str(out / "sub-01"), "--subject", "sub-01"])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "sub-01_desc-coreg_tof.nii.gz", "sub-01_tof.json", "sub-01_tof.nii.gz"
    ]  # fmt: skip
    coreg, coreg_affine = load_volume(out / "sub-01_desc-coreg_tof.nii.gz")
    assert coreg.shape == sim.signal.shape[:3] and np.allclose(coreg_affine, affine, atol=1e-4)
    assert coreg.max() > 0
    tof, _ = load_volume(out / "sub-01_tof.nii.gz")
    assert tof.shape != coreg.shape  # its own, finer grid
    text = (out / "sub-01_tof.json").read_text()
    assert not [k for k in PHI_TAGS if exam.identifiers[k] in text]


def test_simulate_command_writes_enhanced_dicom(tmp_path):
    """``--dicom-storage enhanced``: the dynamic series is one Enhanced MR Image Storage file
    (the localizer stays classic), and the series is found with all its time points."""
    import pydicom

    from bolus.io.dicom import discover_series

    main(["simulate", str(tmp_path), "--subjects", "1", "--seed", "3", "--matrix", "24", "24", "4",
          "--timepoints", "6", "--dicom-storage", "enhanced"])  # fmt: skip
    folder = tmp_path / "sourcedata" / "sub-01" / "dicom"
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 3 + 1
    classes = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files}
    assert "1.2.840.10008.5.1.4.1.1.4.1" in classes
    dynamic = [s for s in discover_series(folder) if s.is_dynamic]
    assert [(s.enhanced, s.n_images, s.n_timepoints) for s in dynamic] == [(True, 24, 6)]
