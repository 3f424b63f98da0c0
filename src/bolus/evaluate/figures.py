"""Figures of a subject and of a study (matplotlib, Agg canvas, PNG).

Per subject:

* :func:`montage` — a row per method (the reference first), a column pair per map (the
  values and |method − reference|) on a representative axial slice
  (:func:`representative_slices`: the slice where the reference lesion is largest, else the
  one with the most brain); its width does not grow with the methods;
* :func:`aif_figure` — the automatic AIF (with the reference AIF when there is one);
* :func:`motion_figure` — the six rigid parameters and the framewise displacement.

Per study, from the long subject table (``metrics/subjects.tsv``; nothing else is read, so
the figures scale with the number of subjects, not with the size of their maps):

* :func:`metric_boxplot` — one metric, a panel per map × region, a box per method;
* :func:`lesion_boxplot` — the lesion agreement (Dice, IoU, HD95, volume difference, AUC,
  Dice at the ROC threshold) per method;
* :func:`bland_altman` — regional mean of each method vs the reference: difference against
  mean, with the bias and the 95 % limits of agreement (bias ± 1.96 SD) per region;
* :func:`regional_scatter` — method against reference regional means, with the identity.

Every function draws on a new :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no global backend change) and writes a PNG; it returns the path written.
Figures are generic over the methods and maps present (a model that predicts only CBF
and CBV gets panels for those only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bolus import paths
from bolus.evaluate.metrics import as_mask
from bolus.evaluate.regions import REGIONS
from bolus.perfusion.methods import METHODS as SVD_METHODS

DPI = 110
PANEL_IN = 1.35  # inches per image panel
MAP_UNITS = paths.MAP_UNITS
METRIC_LABELS = {
    "mae": "MAE (map units)",
    "rmse": "RMSE (map units)",
    "nrmse": "NRMSE",
    "ssim": "SSIM",
    "psnr": "PSNR (dB)",
    "pcc": "Pearson r",
    "scc": "Spearman ρ",
    "dice": "Dice (Tmax > threshold)",
    "iou": "IoU (Tmax > threshold)",
    "hd95": "HD95 (mm)",
    "volume_diff_ml": "volume difference (ml)",
    "auc": "AUC of Tmax",
    "dice_roc": "Dice (ROC threshold)",
}
LESION_PANELS = ("dice", "iou", "hd95", "volume_diff_ml", "auc", "dice_roc")
REGION_COLOURS = {
    "brain": "#4c72b0",
    "gm": "#55a868",
    "wm": "#8172b2",
    "lesion": "#c44e52",
    "user_mask": "#dd8452",
}


def _new_figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _margins(
    figure: Figure,
    left: float = 0.7,
    right: float = 0.2,
    bottom: float = 0.6,
    top: float = 0.6,
    wspace: float = 0.35,
    hspace: float = 0.5,
) -> None:
    """Fixed margins in inches (a layout engine costs seconds per figure with many panels)."""
    width, height = figure.get_size_inches()
    figure.subplots_adjust(
        left=min(left / width, 0.45),
        right=max(1 - right / width, 0.55),
        bottom=min(bottom / height, 0.45),
        top=max(1 - top / height, 0.55),
        wspace=wspace,
        hspace=hspace,
    )


#: colours of the saved PNGs: figures are stored as 8-bit palette images (Pillow's fast
#: octree quantisation, no dithering), 3–4× smaller than RGBA and indistinguishable at
#: these colour maps, so that a cohort's figures (and the report embedding them) stay small
PNG_COLOURS = 256


def _save(figure: Figure, out_png: str | Path) -> Path:
    """Write ``figure`` as a palette PNG of :data:`PNG_COLOURS` colours."""
    import io

    from PIL import Image

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, facecolor="white", format="png")
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(
            colors=PNG_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
    palette.save(out_png, format="PNG", optimize=True)
    return out_png


def notice_figure(out_png: str | Path, title: str, text: str) -> Path:
    """A text-only panel: what a subject's figure would show, had the subject completed."""
    import textwrap

    figure = _new_figure(6.0, 2.0)
    figure.text(0.03, 0.8, title, fontsize=11, weight="bold", va="top")
    figure.text(0.03, 0.55, textwrap.fill(text, 90), fontsize=9, va="top")
    return _save(figure, out_png)


def ordered_methods(methods) -> list[str]:
    """Classic SVD methods first (sSVD, cSVD, oSVD), then the others alphabetically."""
    methods = [str(m) for m in dict.fromkeys(methods)]
    classic = [m for m in SVD_METHODS if m in methods]
    return classic + sorted(m for m in methods if m not in classic)


def ordered_maps(names) -> list[str]:
    names = {str(n) for n in names}
    return [m for m in paths.MAPS if m in names] + sorted(names - set(paths.MAPS))


def ordered_regions(names) -> list[str]:
    names = {str(n) for n in names}
    return [r for r in REGIONS if r in names] + sorted(names - set(REGIONS))


# ----------------------------------------------------------------------------- subject


def representative_slices(
    brain_mask: np.ndarray, lesion: np.ndarray | None = None, n: int = 2
) -> list[int]:
    """Up to ``n`` axial slices (last array axis): the one where ``lesion`` covers most
    voxels (when there is a lesion), then those with the most brain voxels."""
    brain = as_mask(brain_mask)
    chosen: list[int] = []
    if lesion is not None and as_mask(lesion).any():
        chosen.append(int(np.argmax(as_mask(lesion).sum(axis=(0, 1)))))
    area = brain.sum(axis=(0, 1))
    for k in np.argsort(-area, kind="stable"):
        if len(chosen) >= n:
            break
        if int(k) not in chosen and (area[k] > 0 or not area.any()):
            chosen.append(int(k))
    return chosen[:n]


def _display(volume: np.ndarray, k: int, brain: np.ndarray) -> np.ndarray:
    """Axial slice ``k`` for imshow (x to the right, y up), NaN outside the brain."""
    image = np.where(brain[:, :, k], volume[:, :, k], np.nan)
    return image.T


def _range(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [2, 98])
    if high <= low:
        high = low + (abs(low) if low else 1.0)
    return float(low), float(high)


def montage(
    out_png: str | Path,
    reference: Mapping[str, np.ndarray],
    methods: Mapping[str, Mapping[str, np.ndarray]],
    brain_mask: np.ndarray,
    lesion: np.ndarray | None = None,
    title: str = "",
    n_slices: int = 1,
) -> Path:
    """Reference and every method, a row each, with a column pair per map: the values and
    |method − reference|, on :func:`representative_slices` (``n_slices`` side by side in
    every panel; by default the one slice where the reference lesion is largest).

    The width depends only on the maps and slices, the height grows with the methods, so a
    panel keeps its size (about :data:`PANEL_IN` inches per 64 voxels) at any number of
    methods. Values share the reference's 2–98th percentile in the brain; the differences
    one scale per map (0 to the 98th percentile of every method's |difference|), each with
    its colour bar under its column. The reference lesion is outlined in white. Each column
    is one image (its rows stacked), which keeps a large cohort's montages fast to draw.
    """
    brain = as_mask(brain_mask)
    names = [m for m in ordered_maps(reference) if any(m in maps for maps in methods.values())]
    method_names = ordered_methods(methods)
    slices = representative_slices(brain, lesion, n_slices)
    rows = ["reference", *method_names]
    shape = (brain.shape[1], brain.shape[0])  # displayed: y rows, x columns
    panel_in = PANEL_IN * max(shape[1], 1) / 64 * len(slices)  # one panel: every slice
    aspect = shape[0] / max(shape[1] * len(slices), 1)
    label_in, bar_in, top_in = 0.9, 0.55, 0.45 + (0.25 if title else 0.0)
    width_in = label_in + 2 * max(len(names), 1) * (panel_in + 0.06) + 0.2
    height_in = top_in + len(rows) * (panel_in * aspect + 0.08) + bar_in
    figure = _new_figure(width_in, height_in)
    if title:
        figure.suptitle(title, fontsize=9)
    if not names:
        ax = figure.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no map shared by the reference and a method", ha="center")
        ax.set_axis_off()
        return _save(figure, out_png)
    grid = figure.add_gridspec(
        1, 2 * len(names), left=label_in / width_in, right=1 - 0.2 / width_in,
        bottom=bar_in / height_in, top=1 - top_in / height_in, wspace=0.06 / panel_in,
    )  # fmt: skip
    bars = figure.add_gridspec(
        1, 2 * len(names), left=label_in / width_in, right=1 - 0.2 / width_in,
        bottom=0.3 / height_in, top=0.4 / height_in, wspace=0.06 / panel_in,
    )  # fmt: skip
    gap = 2
    outline = as_mask(lesion) if lesion is not None else None

    def panel(volume) -> np.ndarray:
        """Every slice of one row side by side (NaN outside the brain)."""
        if volume is None:
            return np.full((shape[0], shape[1] * len(slices) + gap * (len(slices) - 1)), np.nan)
        pieces = []
        for i, k in enumerate(slices):
            if i:
                pieces.append(np.full((shape[0], gap), np.nan))
            pieces.append(_display(np.asarray(volume, dtype=np.float64), k, brain))
        return np.hstack(pieces)

    def column(panels) -> np.ndarray:
        """Rows stacked top (reference) to bottom with ``gap`` NaN rows between them
        (origin lower: the first row is drawn at the top)."""
        pieces = []
        for i, p in enumerate(reversed(panels)):
            if i:
                pieces.append(np.full((gap, p.shape[1]), np.nan))
            pieces.append(p)
        return np.vstack(pieces)

    row_height = shape[0] + gap
    for c, name in enumerate(names):
        ref = np.asarray(reference[name], dtype=np.float64)
        vmin, vmax = _range(ref[brain])
        values = [ref] + [methods[m].get(name) for m in method_names]
        diffs = [None] + [
            np.abs(np.asarray(methods[m][name], dtype=np.float64) - ref)
            if name in methods[m]
            else None
            for m in method_names
        ]
        present = [d[brain] for d in diffs if d is not None]
        dmax = _range(np.concatenate(present))[1] if present else 1.0
        unit = MAP_UNITS.get(name, "")
        for j, (stack, cmap, low, high, label) in enumerate((
            (values, "viridis", vmin, vmax, name.upper()),
            (diffs, "magma", 0.0, dmax, f"|Δ{name.upper()}|"),
        )):  # fmt: skip
            ax = figure.add_subplot(grid[0, 2 * c + j])
            image = ax.imshow(column([panel(v) for v in stack]), cmap=cmap, vmin=low, vmax=high,
                              origin="lower", interpolation="nearest", aspect="auto")  # fmt: skip
            if j == 0 and outline is not None and outline.any():
                edges = [panel(outline.astype(float))] + [panel(None)] * len(method_names)
                ax.contour(np.nan_to_num(column(edges)), [0.5], colors="w", linewidths=0.6)
            ax.set_axis_off()
            ax.set_title(label, fontsize=7)
            if c == 0 and j == 0:
                total = len(rows) * row_height - gap
                for r, row in enumerate(rows):
                    y = total - r * row_height - shape[0] / 2
                    have = row == "reference" or name in methods[row]
                    ax.text(-3, y, row if have else f"{row}\n(no map)", ha="right", va="center",
                            fontsize=7)  # fmt: skip
            bar = figure.colorbar(image, cax=figure.add_subplot(bars[0, 2 * c + j]),
                                  orientation="horizontal")  # fmt: skip
            bar.ax.tick_params(labelsize=5)
            bar.set_label(unit, fontsize=5)
    return _save(figure, out_png)


def aif_figure(
    out_png: str | Path,
    times_s: np.ndarray,
    curve: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
    ylabel: str = "concentration (ΔR2*, 1/s; HU for CT)",
    vof: np.ndarray | None = None,
) -> Path:
    """The AIF against time, its peak marked; ``reference`` (times, curve) dashed; ``vof``
    (the venous output function on the same times) dotted, its peak marked."""
    times_s = np.asarray(times_s, dtype=np.float64)
    curve = np.asarray(curve, dtype=np.float64)
    figure = _new_figure(6.0, 3.4)
    ax = figure.add_subplot(1, 1, 1)
    ax.plot(times_s, curve, "o-", ms=3, lw=1.2, color="#c44e52", label="automatic AIF")
    if vof is not None:
        vof = np.asarray(vof, dtype=np.float64)
        ax.plot(times_s, vof, ":", lw=1.4, color="#4c72b0", label="VOF (venous output)")
        if vof.size and np.isfinite(vof).any():
            v = int(np.nanargmax(vof))
            ax.plot(times_s[v], vof[v], "v", color="#4c72b0", ms=6)
    if reference is not None:
        ax.plot(reference[0], reference[1], "--", lw=1.2, color="0.3", label="reference AIF")
    if curve.size and np.isfinite(curve).any():
        peak = int(np.nanargmax(curve))
        ax.plot(times_s[peak], curve[peak], "k^", ms=6)
        ax.annotate(
            f"peak {curve[peak]:.3g} at {times_s[peak]:.1f} s",
            (times_s[peak], curve[peak]),
            textcoords="offset points",
            xytext=(8, -4),
            fontsize=8,
        )
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title or "arterial input function", fontsize=10)
    _margins(figure, left=0.8, top=0.4)
    return _save(figure, out_png)


def motion_figure(out_png: str | Path, motion: pd.DataFrame, title: str = "") -> Path:
    """Translations (mm), rotations (degrees) and framewise displacement (mm) per volume."""
    figure = _new_figure(6.5, 5.4)
    axes = figure.subplots(3, 1, sharex=True)
    x = motion["volume"].to_numpy() if "volume" in motion else np.arange(len(motion))
    for axis in "xyz":
        if f"trans_{axis}_mm" in motion:
            axes[0].plot(x, motion[f"trans_{axis}_mm"], lw=1, label=axis)
        if f"rot_{axis}_rad" in motion:
            axes[1].plot(x, np.degrees(motion[f"rot_{axis}_rad"]), lw=1, label=axis)
    axes[0].set_ylabel("translation (mm)")
    axes[1].set_ylabel("rotation (°)")
    for ax in axes[:2]:
        ax.legend(fontsize=7, ncols=3, frameon=False)
    if "framewise_displacement_mm" in motion:
        fd = motion["framewise_displacement_mm"].to_numpy(dtype=float)
        axes[2].plot(x, fd, lw=1, color="k")
        axes[2].set_title(
            f"mean FD {np.nanmean(fd):.2f} mm, max {np.nanmax(fd):.2f} mm", fontsize=8
        )
    axes[2].set_ylabel("FD (mm)")
    axes[2].set_xlabel("volume")
    _margins(figure, left=0.8, hspace=0.35)
    figure.suptitle(title or "head motion", fontsize=10)
    return _save(figure, out_png)


# ----------------------------------------------------------------------------- study


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def _boxes(ax, groups: Sequence[np.ndarray], labels: Sequence[str]) -> None:
    """Box per group (median, quartiles, 1.5 IQR whiskers) with the subjects as points."""
    rng = np.random.default_rng(0)
    present = [i for i, g in enumerate(groups) if g.size]
    if not present:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.boxplot(
            [groups[i] for i in present],
            positions=[i + 1 for i in present],
            widths=0.6,
            showfliers=False,
            medianprops={"color": "k"},
        )
        for i in present:
            jitter = rng.uniform(-0.15, 0.15, groups[i].size)
            ax.plot(i + 1 + jitter, groups[i], ".", ms=3, alpha=0.6, color="#4c72b0")
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=7)
    ax.set_xlim(0.4, len(labels) + 0.6)
    ax.tick_params(axis="y", labelsize=7)


def metric_boxplot(out_png: str | Path, subjects: pd.DataFrame, metric: str) -> Path:
    """Box plot of one metric over subjects: a panel per map (columns) and region (rows),
    a box per method."""
    rows = subjects[subjects["metric"].astype(str) == metric]
    maps = ordered_maps(rows["map"].unique()) or ["—"]
    regions = ordered_regions(rows["region"].unique()) or ["brain"]
    methods = ordered_methods(rows["method"].unique())
    figure = _new_figure(1.0 + 0.35 * max(len(methods), 2) * len(maps) + 0.6 * len(maps),
                         0.8 + 2.0 * len(regions))  # fmt: skip
    axes = figure.subplots(len(regions), len(maps), squeeze=False)
    grouped = {
        k: g["value"].to_numpy()
        for k, g in rows.groupby(["map", "region", "method"], observed=True)
    }
    for r, region in enumerate(regions):
        for c, name in enumerate(maps):
            ax = axes[r, c]
            groups = [_finite(grouped.get((name, region, m), [])) for m in methods]
            _boxes(ax, groups, methods)
            if r == 0:
                unit = MAP_UNITS.get(name)
                ax.set_title(name.upper() + (f" ({unit})" if unit else ""), fontsize=9)
            if c == 0:
                ax.set_ylabel(region, fontsize=9)
    _margins(figure, bottom=0.8, hspace=0.7)
    figure.suptitle(f"{METRIC_LABELS.get(metric, metric)} against the reference, per subject")
    return _save(figure, out_png)


def lesion_boxplot(out_png: str | Path, subjects: pd.DataFrame) -> Path:
    """Lesion agreement over subjects (map ``tmax``, region ``brain``), a box per method."""
    rows = subjects[
        (subjects["map"].astype(str) == "tmax") & (subjects["region"].astype(str) == "brain")
    ]
    methods = ordered_methods(rows["method"].unique())
    figure = _new_figure(2.2 * 3 + 0.5, 2.6 * 2 + 0.6)
    axes = figure.subplots(2, 3, squeeze=False).ravel()
    grouped = {
        k: g["value"].to_numpy() for k, g in rows.groupby(["metric", "method"], observed=True)
    }
    for ax, metric in zip(axes, LESION_PANELS, strict=True):
        _boxes(ax, [_finite(grouped.get((metric, m), [])) for m in methods], methods)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
    _margins(figure, bottom=0.8, hspace=0.7)
    figure.suptitle("Hypoperfusion lesion agreement with the reference, per subject")
    return _save(figure, out_png)


def regional_means_table(subjects: pd.DataFrame) -> pd.DataFrame:
    """Wide table of regional means: participant_id, method, map, region, mean_pred,
    mean_ref (rows where both are finite)."""
    keys = ["participant_id", "method", "map", "region"]
    rows = subjects[subjects["metric"].astype(str).isin(["mean_pred", "mean_ref"])]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "mean_pred", "mean_ref"])
    rows = rows.astype({k: str for k in [*keys, "metric"]})
    wide = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
    wide = wide.reset_index()
    for column in ("mean_pred", "mean_ref"):
        if column not in wide:
            wide[column] = np.nan
    finite = np.isfinite(wide["mean_pred"].astype(float)) & np.isfinite(
        wide["mean_ref"].astype(float)
    )
    return wide[finite][[*keys, "mean_pred", "mean_ref"]]


def _means_grid(subjects: pd.DataFrame, width_per_panel: float = 2.3):
    means = regional_means_table(subjects)
    maps = ordered_maps(means["map"].unique()) or ["—"]
    methods = ordered_methods(means["method"].unique()) or ["—"]
    figure = _new_figure(0.8 + width_per_panel * len(methods), 0.8 + 2.1 * len(maps))
    axes = figure.subplots(len(maps), len(methods), squeeze=False)
    return means, maps, methods, figure, axes


def _region_legend(figure: Figure, regions: Sequence[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", ls="", color=REGION_COLOURS.get(r, "0.4"), label=r)
        for r in regions
    ]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncols=len(handles), fontsize=8,
                      frameon=False)  # fmt: skip


def bland_altman(out_png: str | Path, subjects: pd.DataFrame) -> Path:
    """Bland–Altman plots of regional means: (method − reference) against their average,
    a panel per map (rows) and method (columns), a colour per region; per region the bias
    (solid) and the 95 % limits of agreement, bias ± 1.96 SD (dashed)."""
    means, maps, methods, figure, axes = _means_grid(subjects)
    regions = ordered_regions(means["region"].unique())
    for r, name in enumerate(maps):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            panel = means[(means["map"] == name) & (means["method"] == method)]
            for region in regions:
                part = panel[panel["region"] == region]
                if part.empty:
                    continue
                pred = part["mean_pred"].to_numpy(float)
                ref = part["mean_ref"].to_numpy(float)
                colour = REGION_COLOURS.get(region, "0.4")
                average, difference = (pred + ref) / 2, pred - ref
                ax.plot(average, difference, "o", ms=3.5, color=colour, alpha=0.8)
                bias = float(np.mean(difference))
                ax.axhline(bias, color=colour, lw=0.9)
                if difference.size >= 2:
                    spread = 1.96 * float(np.std(difference, ddof=1))
                    for limit in (bias - spread, bias + spread):
                        ax.axhline(limit, color=colour, lw=0.8, ls="--")
            ax.axhline(0, color="0.6", lw=0.6, ls=":")
            if panel.empty:
                ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
            unit = MAP_UNITS.get(name, "")
            ax.set_title(f"{method}: {name.upper()}", fontsize=8)
            ax.set_xlabel(f"mean of both ({unit})", fontsize=7)
            ax.set_ylabel(f"method − reference ({unit})", fontsize=7)
            ax.tick_params(labelsize=6)
    _margins(figure, left=0.8, right=0.3, bottom=0.9, top=0.8, wspace=0.55, hspace=0.75)
    _region_legend(figure, regions)
    figure.suptitle("Bland–Altman: regional means against the reference")
    return _save(figure, out_png)


def regional_scatter(out_png: str | Path, subjects: pd.DataFrame) -> Path:
    """Method against reference regional means, a colour per region, with the identity
    line and the Pearson r over every point of the panel."""
    means, maps, methods, figure, axes = _means_grid(subjects)
    regions = ordered_regions(means["region"].unique())
    for r, name in enumerate(maps):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            panel = means[(means["map"] == name) & (means["method"] == method)]
            for region in regions:
                part = panel[panel["region"] == region]
                ax.plot(part["mean_ref"], part["mean_pred"], "o", ms=3.5, alpha=0.8,
                        color=REGION_COLOURS.get(region, "0.4"))  # fmt: skip
            if panel.empty:
                ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
            else:
                x = panel["mean_ref"].to_numpy(float)
                y = panel["mean_pred"].to_numpy(float)
                low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
                ax.plot([low, high], [low, high], color="0.5", lw=0.8, ls="--")
                if x.size >= 3 and np.std(x) > 0 and np.std(y) > 0:
                    r_value = float(np.corrcoef(x, y)[0, 1])
                    ax.text(0.04, 0.92, f"r = {r_value:.2f}", transform=ax.transAxes, fontsize=7)
            unit = MAP_UNITS.get(name, "")
            ax.set_title(f"{method}: {name.upper()}", fontsize=8)
            ax.set_xlabel(f"reference ({unit})", fontsize=7)
            ax.set_ylabel(f"{method} ({unit})", fontsize=7)
            ax.tick_params(labelsize=6)
    _margins(figure, left=0.8, right=0.3, bottom=0.9, top=0.8, wspace=0.55, hspace=0.75)
    _region_legend(figure, regions)
    figure.suptitle("Regional means: method against reference")
    return _save(figure, out_png)


def study_figures(subjects: pd.DataFrame, output_dir: str | Path) -> dict[str, Path]:
    """Every study figure of :data:`bolus.paths.STUDY_FIGURES` under
    ``<output_dir>/figures/``; returns name → path."""
    written = {}
    for name in paths.STUDY_FIGURES:
        out = paths.study_figure(output_dir, name)
        if name == "boxplot_lesion":
            written[name] = lesion_boxplot(out, subjects)
        elif name.startswith("boxplot_"):
            written[name] = metric_boxplot(out, subjects, name.removeprefix("boxplot_"))
        elif name == "bland_altman":
            written[name] = bland_altman(out, subjects)
        elif name == "scatter":
            written[name] = regional_scatter(out, subjects)
        else:  # pragma: no cover - a name added to paths without a figure
            raise ValueError(f"no figure is drawn for {name!r}")
    return written
