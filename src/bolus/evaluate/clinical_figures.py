"""Figures of the clinical readouts (matplotlib, Agg canvas, PNG).

* :func:`subject_clinical_figure` — per subject: a row per method (the reference first),
  columns rCBV, rCBF and Tmax on the lesion's slice, with the reference region (cyan), the
  core (red) and Tmax > 6 s (white) outlined; its width does not grow with the methods;
* :func:`clinical_bland_altman` — per study: core and Tmax > 6 s volumes of each method
  against the reference's, a row per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bolus.evaluate.figures import _new_figure, _save, ordered_methods, representative_slices
from bolus.evaluate.metrics import as_mask

PANELS = (
    ("rcbv", "rCBV", (0.0, 3.0)),
    ("rcbf", "rCBF", (0.0, 3.0)),
    ("tmax", "Tmax (s)", (0.0, 12.0)),
)
LABELS = {"core_ml": "core volume (ml)", "mismatch_ml": "mismatch volume (ml)"}


def subject_clinical_figure(
    out_png,
    rows: Mapping[str, Mapping[str, np.ndarray]],
    brain: np.ndarray,
    region: np.ndarray,
    outlines: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    title: str = "",
) -> Path:
    """``rows``: ``{method: {"rcbv"|"rcbf"|"tmax": volume}}`` (missing panels left blank);
    ``outlines``: ``{method: {"core": mask, "hypoperfusion": mask}}``. One axial slice: the
    one where the first method's hypoperfusion is largest, else the most brain."""
    brain = as_mask(brain)
    region = as_mask(region)
    methods = list(rows)
    outlines = outlines or {}
    lesion = next(
        (o.get("hypoperfusion") for o in outlines.values() if o.get("hypoperfusion") is not None),
        None,
    )
    k = representative_slices(brain, lesion, 1)[0]
    panel_in = 1.9
    figure = _new_figure(0.9 + panel_in * len(PANELS), 1.2 + panel_in * max(len(methods), 1))
    if title:
        figure.suptitle(f"{title} (slice z={k}; cyan: reference region)", fontsize=9)
    width, height = figure.get_size_inches()
    grid = figure.add_gridspec(max(len(methods), 1), len(PANELS), left=0.8 / width,
                               right=1 - 0.1 / width, bottom=0.6 / height,
                               top=1 - 0.55 / height, wspace=0.05, hspace=0.12)  # fmt: skip
    bars = figure.add_gridspec(1, len(PANELS), left=0.8 / width, right=1 - 0.1 / width,
                               bottom=0.3 / height, top=0.4 / height, wspace=0.15)  # fmt: skip
    for r, method in enumerate(methods):
        for c, (name, label, (vmin, vmax)) in enumerate(PANELS):
            ax = figure.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            volume = rows[method].get(name)
            if volume is not None:
                image = np.where(brain[:, :, k], np.asarray(volume, float)[:, :, k], np.nan).T
                cmap = "magma" if name == "tmax" else "viridis"
                shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower",
                                  interpolation="nearest")  # fmt: skip
                if region[:, :, k].any():
                    ax.contour(region[:, :, k].T.astype(float), [0.5], colors="c", linewidths=0.6)
                for key, colour in (("core", "r"), ("hypoperfusion", "w")):
                    mask = outlines.get(method, {}).get(key)
                    if mask is not None and as_mask(mask)[:, :, k].any():
                        ax.contour(as_mask(mask)[:, :, k].T.astype(float), [0.5], colors=colour,
                                   linewidths=0.6)  # fmt: skip
                if r == len(methods) - 1:
                    bar = figure.colorbar(shown, cax=figure.add_subplot(bars[0, c]),
                                          orientation="horizontal")  # fmt: skip
                    bar.ax.tick_params(labelsize=6)
            else:
                ax.text(0.5, 0.5, "no map", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)  # fmt: skip
            if r == 0:
                ax.set_title(label, fontsize=8)
            if c == 0:
                ax.set_ylabel(method, fontsize=8)
    return _save(figure, out_png)


def clinical_bland_altman(out_png, table, reference: str, readouts: Sequence[str]) -> Path:
    """Bland–Altman of clinical volumes: a row per method, a column per readout; method −
    reference against their mean per subject, bias (solid) and 95 % limits of agreement
    (dashed, bias ± 1.96 SD)."""
    from bolus.evaluate.clinical import bland_altman

    methods = [m for m in ordered_methods(table["method"].astype(str).unique()) if m != reference]
    figure = _new_figure(0.9 + 2.8 * len(readouts), 0.9 + 2.3 * max(len(methods), 1))
    axes = figure.subplots(max(len(methods), 1), len(readouts), squeeze=False)
    ref = table[table["method"].astype(str) == reference].set_index("participant_id")
    for r, method in enumerate(methods or ["—"]):
        rows = table[table["method"].astype(str) == method].set_index("participant_id")
        shared = rows.index.intersection(ref.index)
        for c, readout in enumerate(readouts):
            ax = axes[r, c]
            a = rows.loc[shared, readout].to_numpy(float) if len(shared) else np.array([])
            b = ref.loc[shared, readout].to_numpy(float) if len(shared) else np.array([])
            keep = np.isfinite(a) & np.isfinite(b)
            a, b = a[keep], b[keep]
            if a.size:
                ax.plot((a + b) / 2, a - b, "o", ms=4, color="#4c72b0", alpha=0.8)
                stats = bland_altman(a, b)
                ax.axhline(stats["bias"], color="k", lw=0.9)
                if np.isfinite(stats["loa_low"]):
                    for limit in (stats["loa_low"], stats["loa_high"]):
                        ax.axhline(limit, color="k", lw=0.8, ls="--")
                ax.set_title(f"{method}: bias {stats['bias']:.3g}, LoA "
                             f"[{stats['loa_low']:.3g}, {stats['loa_high']:.3g}]", fontsize=7)  # fmt: skip
            else:
                ax.text(0.5, 0.5, "no pair", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(method, fontsize=7)
            ax.axhline(0, color="0.6", lw=0.6, ls=":")
            label = LABELS.get(
                readout, readout.replace("tmax_gt", "Tmax > ").replace("s_ml", " s volume (ml)")
            )
            ax.set_xlabel(f"mean of both: {label}", fontsize=7)
            ax.set_ylabel(f"method − {reference} (ml)", fontsize=7)
            ax.tick_params(labelsize=6)
    figure.subplots_adjust(left=0.8 / figure.get_size_inches()[0], right=0.97, wspace=0.45,
                           hspace=0.6, bottom=0.6 / figure.get_size_inches()[1],
                           top=1 - 0.6 / figure.get_size_inches()[1])  # fmt: skip
    figure.suptitle("Bland–Altman: clinical volumes against the reference, per subject", fontsize=9)
    return _save(figure, out_png)
