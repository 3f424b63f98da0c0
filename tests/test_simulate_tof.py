"""The simulator's TOF-MRA-like angiogram: vessel territories and the perfusion deficit."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bolus.simulate.phantom import CORE, PENUMBRA, AcquisitionGrid, make_phantom
from bolus.simulate.tof import TERRITORIES, simulate_tof, write_tof

CODE = {name: code for code, name in TERRITORIES.items()}
VESSEL_THRESHOLD = 250.0  # above any static tissue (≤ 300 · bias 1.25 only in the scalp)


@pytest.fixture(scope="module")
def subjects():
    grid = AcquisitionGrid.axial((48, 48, 10))
    out = {}
    for pathology, seed in (("stroke", 11), ("healthy", 12)):
        phantom = make_phantom(np.random.default_rng(seed), grid, pathology)
        out[pathology] = (phantom, simulate_tof(phantom, np.random.default_rng(seed + 100)))
    return out


def _bright_fraction(tof, phantom, territory):
    region = (tof.territories == CODE[territory]) & phantom.brain
    return float(np.mean(tof.image[region] > VESSEL_THRESHOLD))


def test_the_stroke_lies_in_the_territory_of_the_occluded_artery(subjects):
    phantom, tof = subjects["stroke"]
    side = phantom.info["stroke_side"]
    assert tof.occluded == f"mca_{side}"
    lesion = np.isin(phantom.labels, (CORE, PENUMBRA))
    share = np.mean(tof.territories[lesion] == CODE[f"mca_{side}"])
    # the phantom's core and penumbra are ellipsoids centred in the MCA territory; their
    # edges reach into the neighbouring ACA/PCA territories a little (measured ≈ 94 %)
    assert share > 0.85


def test_the_occluded_territory_has_no_bright_vessels(subjects):
    phantom, tof = subjects["stroke"]
    side = phantom.info["stroke_side"]
    other = "left" if side == "right" else "right"
    ipsi = _bright_fraction(tof, phantom, f"mca_{side}")
    contra = _bright_fraction(tof, phantom, f"mca_{other}")
    assert contra > 0.01  # branches visible on the healthy side
    assert ipsi < 0.3 * contra  # M2 trunks and cortical branches absent after the occlusion


def test_a_healthy_subject_is_symmetric(subjects):
    phantom, tof = subjects["healthy"]
    assert tof.occluded is None
    left = _bright_fraction(tof, phantom, "mca_left")
    right = _bright_fraction(tof, phantom, "mca_right")
    assert 0.4 < left / right < 2.5  # random cortical branches, same trunks


def test_image_is_on_the_dsc_grid_and_written_as_nifti(subjects, tmp_path):
    phantom, tof = subjects["stroke"]
    assert tof.image.shape == phantom.grid.shape and tof.image.dtype == np.float32
    assert np.all(tof.territories[~phantom.brain] == 0)
    assert set(np.unique(tof.territories[phantom.brain])) <= set(range(1, 7))
    paths = write_tof(tmp_path, tof, phantom.grid.affine_ras)
    img = nib.load(paths["tof"])
    np.testing.assert_allclose(img.affine, phantom.grid.affine_ras)
    np.testing.assert_allclose(img.get_fdata(), tof.image, rtol=1e-6)
    # the largest arteries are the brightest structures
    assert tof.image.max() > 3 * np.median(tof.image[phantom.brain])


def test_the_cohort_lists_each_subjects_tof(tmp_path):
    import pandas as pd

    from bolus.preprocess.coregister import convert_tof
    from bolus.simulate.cohort import simulate_cohort

    tsv = simulate_cohort(tmp_path, 1, seed=3, matrix=(32, 32, 6), n_timepoints=12)
    row = pd.read_csv(tsv, sep="\t").iloc[0]
    path = tmp_path / row["tof_nifti"]
    # its own acquisition: twice the DSC matrix in-plane over 0.9 of its field of view, half
    # its slice spacing over a slab two DSC slices longer
    image = nib.load(path)
    assert image.shape == (64, 64, 16)
    dsc = nib.load(tmp_path / row["reference_dir"] / "cbf.nii.gz")
    np.testing.assert_allclose(
        np.array(image.header.get_zooms()) / np.array(dsc.header.get_zooms()), [0.45, 0.45, 0.5]
    )
    assert nib.load(path.parent / "territories.nii.gz").shape == dsc.shape
    # the same image as a DICOM series: dcm2niix gives it back voxel for voxel (uint16)
    converted = convert_tof(
        {"tof_dicom_dir": str(tmp_path / row["tof_dicom_dir"])},
        tmp_path / "tof.nii.gz", tmp_path / "tof.json", row["participant_id"],
    )  # fmt: skip
    back = nib.load(converted)
    from bolus.io.nifti import resample_to_grid

    same = resample_to_grid(back.get_fdata(), back.affine, image.shape, image.affine, order=0)
    np.testing.assert_array_equal(same, np.clip(np.rint(image.get_fdata()), 0, 65535))
