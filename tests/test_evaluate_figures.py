"""Figures: representative slices, montages and study figures for any methods and maps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bolus import paths
from bolus.evaluate.aggregate import SUBJECT_COLUMNS
from bolus.evaluate.figures import (
    aif_figure,
    montage,
    motion_figure,
    ordered_methods,
    regional_means_table,
    representative_slices,
    study_figures,
)

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) in pixels from the PNG header."""
    data = path.read_bytes()
    assert data.startswith(PNG), f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_lesion_slice_comes_first_then_the_largest_brain_slices():
    brain = np.zeros((10, 10, 6), bool)
    brain[2:8, 2:8, 1:5] = True
    brain[1:9, 1:9, 3] = True  # slice 3 holds the most brain
    lesion = np.zeros_like(brain)
    lesion[3:5, 3:5, 1] = True
    assert representative_slices(brain, lesion, 2) == [1, 3]
    assert representative_slices(brain, None, 2)[0] == 3
    assert representative_slices(brain, lesion, 1) == [1]


def test_methods_are_ordered_classic_first():
    assert ordered_methods(["talebi", "osvd", "stnet", "ssvd"]) == [
        "ssvd",
        "osvd",
        "stnet",
        "talebi",
    ]


def test_montage_draws_every_method_even_with_fewer_maps(tmp_path):
    rng = np.random.default_rng(0)
    shape = (20, 24, 5)
    brain = np.zeros(shape, bool)
    brain[3:17, 3:21] = True
    reference = {name: rng.uniform(1, 5, shape) for name in paths.MAPS}
    methods = {
        "osvd": {k: v * 1.1 for k, v in reference.items()},
        "talebi": {"cbf": reference["cbf"], "cbv": reference["cbv"]},
    }
    out = montage(tmp_path / "m.png", reference, methods, brain, brain & (reference["tmax"] > 4))
    width, height = png_size(out)
    assert width > height  # five maps × (values, |difference|) beside 3 rows
    two_maps = montage(tmp_path / "two.png", {"cbf": reference["cbf"]}, methods, brain)
    assert png_size(two_maps)[0] < width and png_size(two_maps)[1] == height


def test_montage_width_does_not_grow_with_the_methods(tmp_path):
    """A row per method: seven methods keep the width of one (each panel legible), and
    the height grows by one panel row per method."""
    rng = np.random.default_rng(0)
    shape = (48, 48, 8)
    brain = np.zeros(shape, bool)
    brain[6:42, 6:42] = True
    reference = {name: rng.uniform(1, 5, shape) for name in paths.MAPS}
    one = montage(tmp_path / "1.png", reference, {"osvd": reference}, brain)
    many = {f"m{i}": reference for i in range(7)}
    seven = montage(tmp_path / "7.png", reference, many, brain)
    assert png_size(seven)[0] == png_size(one)[0] < 1800
    assert png_size(seven)[1] > 2.5 * png_size(one)[1]


def test_qc_plots_are_written(tmp_path):
    t = np.arange(30) * 1.5
    assert png_size(aif_figure(tmp_path / "aif.png", t, np.exp(-((t - 15) ** 2) / 20)))
    motion = pd.DataFrame({"volume": range(30), "trans_x_mm": np.linspace(0, 1, 30),
                           "rot_z_rad": np.linspace(0, 0.01, 30),
                           "framewise_displacement_mm": np.full(30, 0.05)})  # fmt: skip
    assert png_size(motion_figure(tmp_path / "motion.png", motion))


def subjects_table() -> pd.DataFrame:
    """Five subjects, osvd with every map and talebi with CBF and CBV only."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(1, 6):
        pid = f"sub-{i:02d}"
        for method, maps in (("osvd", paths.MAPS), ("talebi", ("cbf", "cbv"))):
            for name in maps:
                for region in ("brain", "lesion") if i % 2 else ("brain",):
                    truth = rng.uniform(10, 50)
                    values = {"nrmse": rng.uniform(0.1, 0.4), "ssim": rng.uniform(0.5, 0.9),
                              "mean_ref": truth, "mean_pred": truth * rng.uniform(0.8, 1.2)}  # fmt: skip
                    rows += [(pid, method, name, region, k, v) for k, v in values.items()]
                if name == "tmax":
                    rows += [(pid, method, "tmax", "brain", "dice", rng.uniform(0.3, 0.9))]
    return pd.DataFrame.from_records(rows, columns=list(SUBJECT_COLUMNS))


def test_regional_means_pair_method_and_reference_per_subject_and_region():
    means = regional_means_table(subjects_table())
    assert len(means) == 5 * (5 + 2) + 3 * (5 + 2)  # every brain row, lesion in 3 subjects
    assert {"mean_pred", "mean_ref"} <= set(means.columns)
    assert set(means.query("method == 'talebi'")["map"]) == {"cbf", "cbv"}


def test_every_study_figure_is_drawn_also_for_metrics_without_values(tmp_path):
    written = study_figures(subjects_table(), tmp_path)
    assert list(written) == list(paths.STUDY_FIGURES)
    for name, path in written.items():
        assert path == paths.study_figure(tmp_path, name)
        assert png_size(path)  # boxplot_psnr has no values and still says so


def test_an_empty_study_still_draws(tmp_path):
    frame = pd.DataFrame(
        {c: pd.Series(dtype=float if c == "value" else str) for c in SUBJECT_COLUMNS}
    )
    written = study_figures(frame, tmp_path)
    assert all(png_size(p) for p in written.values())
