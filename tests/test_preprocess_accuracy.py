"""End to end on simulated DICOM: motion and vendor conventions do not cost map accuracy."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _cbf_cbv_pcc(tmp_path, name, *, motion_mm, vendor, dcm2niix):
    """Simulate one stroke subject (48×48×8×40), write its DICOM with ``vendor``'s
    conventions and a localizer, then convert, preprocess and compute oSVD maps; Pearson r of
    CBF and CBV with the truth inside the truth's tissue and the computed brain mask."""
    from bolus import stages
    from bolus.io.nifti import load_volume
    from bolus.simulate.cohort import simulate_subject, write_truth
    from bolus.simulate.dicom_writer import synthetic_exam, write_dsc_series, write_localizer_series

    sim = simulate_subject(9, 1, "stroke", matrix=(48, 48, 8), n_timepoints=40, motion_mm=motion_mm)
    folder = tmp_path / name
    exam = synthetic_exam(9, 1)
    write_localizer_series(folder / "dicom", exam=exam, series_number=1)
    write_dsc_series(
        folder / "dicom", sim.signal, sim.phantom.grid, tr_s=sim.tr_s, te_s=sim.te_s,
        exam=exam, vendor=vendor,
    )  # fmt: skip
    write_truth(folder / "truth", sim)
    out = folder / "out"
    row = {"participant_id": "sub-01", "dicom_dir": str(folder / "dicom")}
    stages.convert_subject(row, out / "dsc.nii.gz", out / "dsc.json")
    stages.preprocess_subject(
        out / "dsc.nii.gz", out / "mc.nii.gz", out / "motion.tsv", out / "mask.nii.gz", workers=2
    )
    config = {"participants": "x", "svd": {"methods": ["osvd"]}}
    stages.perfusion_subject(
        out / "mc.nii.gz", out / "dsc.json", out / "mask.nii.gz", out / "conc.nii.gz",
        out / "aif.tsv", out / "aif_mask.nii.gz", out / "sub-01", config,
        out_tissue_mask=out / "tissue.nii.gz",
    )  # fmt: skip
    mask, affine = load_volume(out / "mask.nii.gz")
    reference = stages.load_reference_maps(folder / "truth", mask.shape, affine)
    inside = (mask > 0) & np.isfinite(reference["cbf"])
    result = {}
    for name_ in ("cbf", "cbv"):
        pred = load_volume(out / f"sub-01_desc-osvd_{name_}.nii.gz")[0]
        ok = inside & np.isfinite(pred)
        result[name_] = float(np.corrcoef(pred[ok], reference[name_][ok])[0, 1])
    return result


@pytest.mark.xfail(
    strict=True,
    reason="known gap (issue 3): with a 2 mm drift, oSVD CBF/CBV reach r 0.42/0.48 against "
    "truth vs 0.89/0.83 still (0.40/0.35 without motion correction); a still head exported "
    "slice-major (Siemens) matches the standard export (0.90/0.83)",
)
def test_motion_and_vendor_conventions_match_the_still_siemens_accuracy(tmp_path, dcm2niix):
    """Still head, standard export vs a 2 mm drifting head exported slice-major (Siemens
    convention, which dcm2niix alone scrambles): after conversion, motion correction and oSVD,
    CBF and CBV correlate with the truth as well as without motion, within 0.05 in r.
    Tolerance: motion correction resamples every volume (linear interpolation smooths the
    3.4 mm voxels) and the mask edge moves by up to a voxel, which costs a few hundredths of r
    on a 48×48×8 grid; a scrambled series or failed registration costs far more (r < 0.5)."""
    still = _cbf_cbv_pcc(tmp_path, "still", motion_mm=0.0, vendor=None, dcm2niix=dcm2niix)
    moving = _cbf_cbv_pcc(tmp_path, "moving", motion_mm=2.0, vendor="siemens", dcm2niix=dcm2niix)
    print(f"PCC still {still}, moving {moving}")
    assert still["cbf"] > 0.6 and still["cbv"] > 0.6
    for name in ("cbf", "cbv"):
        assert moving[name] >= still[name] - 0.05, (name, still, moving)
