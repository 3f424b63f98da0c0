"""CT perfusion from a simulated subject: the same anatomy, perfusion and tracer kinetics as
its DSC simulation, seen by a CT scanner.

Iodine raises attenuation linearly, so a voxel's value is

    HU(t) = HU0(tissue) + k · C(t)

with C the simulation's noise-free tracer concentration (``DSCSimulation.concentration_mM``,
the same curves whose deconvolution gives the truth maps) and k chosen so that the arterial
peak enhancement is ``arterial_peak_hu`` (typically 300–400 HU in a CTP acquisition). Tissue
enhancement follows from the same k (grey matter peaks ≈ 15–20 HU). Unenhanced values
(:data:`BASELINE_HU`): air −1000, bone 1000, blood 40, grey matter 38, white matter 28,
CSF 8, oedematous stroke core 32. With ``motion`` the series moves along the simulation's
rigid trajectory (:func:`bolus.simulate.phantom.simulate_dsc`). Noise is Gaussian with
σ = ``noise_hu`` per acquisition voxel: a CTP reconstruction of ≈ 0.5 mm pixels has σ ≈
10–20 HU at 5 mm slices; averaged into the 3.4–4.6 mm pixels of these grids (≈ 50–100
pixels) it is ≈ 1–2 HU, which also gives grey matter a contrast-to-noise ratio close to
that of the DSC simulation at its default SNR.

:func:`write_ctp_nifti` writes the series as a user-supplied NIfTI (participants column
``dsc_nifti``, with ``modality: ctp``) with its BIDS-like sidecar (no echo time).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bolus.simulate import phantom as ph

BASELINE_HU = {ph.BACKGROUND: -1000.0, ph.SCALP: 40.0, ph.SKULL: 1000.0, ph.CSF: 8.0,
               ph.GM: 38.0, ph.WM: 28.0, ph.ARTERY: 40.0, ph.VEIN: 40.0, ph.CORE: 32.0,
               ph.PENUMBRA: 36.0, ph.TUMOUR: 40.0}  # fmt: skip


def ctp_series(
    sim: ph.DSCSimulation,
    rng: np.random.Generator,
    *,
    arterial_peak_hu: float = 350.0,
    noise_hu: float = 2.0,
    motion: bool = True,
) -> np.ndarray:
    """The CT perfusion series (i, j, k, t) of ``sim`` in HU, float32 (module docstring)."""
    labels = sim.phantom.labels
    baseline = np.zeros(labels.shape)
    for label, value in BASELINE_HU.items():
        baseline[labels == label] = value
    k = float(arterial_peak_hu) / float(np.max(sim.aif_mM))
    hu = baseline[..., None] + k * sim.concentration_mM.astype(float)
    if motion and np.any(sim.motion):
        hu = ph._move(hu, sim.phantom.grid, sim.motion)
    hu = hu + float(noise_hu) * rng.standard_normal(hu.shape)
    return hu.astype(np.float32)


def write_ctp_nifti(folder, hu: np.ndarray, sim: ph.DSCSimulation) -> Path:
    """``<folder>/ctp.nii.gz`` (int16 HU, the DSC grid's RAS affine) and ``ctp.json``
    (Modality CT, RepetitionTime = frame interval, VolumeTiming); returns the NIfTI path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = sim.phantom.grid.affine_ras
    image = nib.Nifti1Image(np.rint(hu).astype(np.int16), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = sim.tr_s
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path = folder / "ctp.nii.gz"
    nib.save(image, path)
    sidecar = {
        "Modality": "CT",
        "Manufacturer": "SIMULATED",
        "RepetitionTime": sim.tr_s,
        "VolumeTiming": [round(float(t), 6) for t in sim.time_s],
    }
    (folder / "ctp.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path
