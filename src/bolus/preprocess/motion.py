"""Rigid motion correction of a 4D series with ANTs.

Every volume is registered rigidly (mutual information) to one reference volume: the
temporal median of the series, which the 10–20 bolus frames barely move, so the signal
drop of the first pass does not pull the reference. Motion parameters are reported in
the image's own axes (translations in mm, rotations in rad about the volume centre),
with the framewise displacement of Power et al. (2012): Σ|Δtranslation| + 50 mm·Σ|Δrotation|.

A loop over volumes (tens), never over voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MOTION_COLUMNS = ("trans_x_mm", "trans_y_mm", "trans_z_mm", "rot_x_rad", "rot_y_rad", "rot_z_rad")
HEAD_RADIUS_MM = 50.0
RANDOM_SEED = 1  # ANTs samples the metric randomly: a fixed seed makes reruns identical


def _remove_transform_files(registration: dict) -> None:
    """ANTs leaves its transforms in the temporary folder; a cohort would fill it."""
    for path in set(registration["fwdtransforms"]) | set(registration["invtransforms"]):
        Path(path).unlink(missing_ok=True)


def _to_ants(volume: np.ndarray, spacing_mm):
    import ants

    return ants.from_numpy(
        np.ascontiguousarray(volume, dtype=np.float32), spacing=tuple(spacing_mm)
    )


def _rigid_parameters(transform_file: str) -> np.ndarray:
    """(tx, ty, tz, rx, ry, rz) of an ANTs affine/rigid .mat (Euler angles, XYZ order)."""
    import ants

    params = np.asarray(ants.read_transform(transform_file).parameters, dtype=float)
    rotation = params[:9].reshape(3, 3)
    translation = params[9:12]
    rx = np.arctan2(rotation[2, 1], rotation[2, 2])
    ry = np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
    rz = np.arctan2(rotation[1, 0], rotation[0, 0])
    return np.concatenate([translation, [rx, ry, rz]])


def framewise_displacement(parameters: np.ndarray) -> np.ndarray:
    """Power FD (mm) from (T, 6) parameters: translations (mm) then rotations (rad)."""
    delta = np.abs(np.diff(parameters, axis=0, prepend=parameters[:1]))
    return delta[:, :3].sum(axis=1) + HEAD_RADIUS_MM * delta[:, 3:].sum(axis=1)


def motion_correct(
    series: np.ndarray, spacing_mm, *, transform: str = "Rigid"
) -> tuple[np.ndarray, pd.DataFrame]:
    """Register every volume of ``series`` (x, y, z, t) to its temporal median.

    Returns the corrected series (float32, same shape) and a table with one row per
    volume: the six rigid parameters and ``framewise_displacement_mm``.
    """
    import ants

    if series.ndim != 4:
        raise ValueError(f"motion correction needs a 4D series, got shape {series.shape}")
    ants.config.set_ants_deterministic(True, RANDOM_SEED)
    spacing = tuple(float(s) for s in spacing_mm[:3])
    reference = _to_ants(np.median(series, axis=-1), spacing)
    ants_transform = {"Rigid": "BOLDRigid"}[transform]
    corrected = np.empty(series.shape, dtype=np.float32)
    parameters = np.zeros((series.shape[-1], 6))
    for k in range(series.shape[-1]):
        moving = _to_ants(series[..., k], spacing)
        if float(series[..., k].std()) == 0.0:
            corrected[..., k] = series[..., k]
            continue
        registration = ants.registration(
            reference,
            moving,
            type_of_transform=ants_transform,
            aff_metric="mattes",
        )
        warped = ants.apply_transforms(
            reference, moving, registration["fwdtransforms"], interpolator="linear"
        )
        corrected[..., k] = warped.numpy()
        parameters[k] = _rigid_parameters(registration["fwdtransforms"][0])
        _remove_transform_files(registration)
    table = pd.DataFrame(parameters, columns=list(MOTION_COLUMNS))
    table.insert(0, "volume", np.arange(series.shape[-1]))
    table["framewise_displacement_mm"] = framewise_displacement(parameters)
    return corrected, table
