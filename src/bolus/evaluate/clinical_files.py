"""The file layer of the clinical rules (rules/clinical.smk): readouts from the workflow's
maps, the cohort's clinical tables, their figures and their markdown section.

* :func:`clinical_subject` — one subject: the reference region, every method's relative
  maps and readouts (the reference's too), ``sub-XX_clinical.tsv``;
* :func:`clinical_cohort` — ``metrics/clinical.tsv`` over the subjects that completed every
  stage and whose readouts could be computed, and ``metrics/clinical_agreement.tsv``;
* :func:`clinical_markdown` — the section of ``study.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bolus import paths
from bolus.config import section
from bolus.evaluate import clinical as cl
from bolus.io.errors import SubjectError

TABLE_COLUMNS = ("participant_id", "method", "lesion_side", "reference_region_source")
#: probability of the warped MNI152 white-matter template that counts as white matter
TEMPLATE_WM_PROBABILITY = 0.8


def template_white_matter(mc_dsc, brain: np.ndarray, affine: np.ndarray, work_dir=None):
    """The MNI152 white-matter template (nilearn, 2 mm) registered affinely (ANTs, mutual
    information) from the MNI152 T1 onto the skull-stripped pre-bolus mean of the
    motion-corrected series; white matter = warped probability ≥
    :data:`TEMPLATE_WM_PROBABILITY`."""
    import tempfile

    from nilearn import datasets

    from bolus.io.nifti import load_volume
    from bolus.preprocess.itk import load_ants
    from bolus.preprocess.mask import _ants_from_nifti
    from bolus.preprocess.motion import pre_bolus_reference

    ants = load_ants()
    series, _ = load_volume(mc_dsc)
    mean, _ = pre_bolus_reference(series)
    fixed = _ants_from_nifti(np.where(brain, mean, 0.0), affine)
    template = datasets.load_mni152_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2)
    moving = _ants_from_nifti(np.asanyarray(template.dataobj) * (np.asanyarray(
        datasets.load_mni152_brain_mask(resolution=2).dataobj) > 0), template.affine)  # fmt: skip
    moving_wm = _ants_from_nifti(np.asanyarray(wm.dataobj), wm.affine)
    ants.config.set_ants_deterministic(True, 1)
    with tempfile.TemporaryDirectory(prefix="bolus-wm-", dir=work_dir) as tmp:
        registration = ants.registration(fixed, moving, outprefix=str(Path(tmp) / "wm_"),
                                         type_of_transform="Affine", aff_metric="mattes")  # fmt: skip
        warped = ants.apply_transforms(
            fixed, moving_wm, registration["fwdtransforms"], interpolator="linear"
        )
    return warped.numpy() >= TEMPLATE_WM_PROBABILITY


def _within(mask, base):
    return None if mask is None else mask & base


def _filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the holes of each axial slice filled."""
    from scipy import ndimage

    out = mask.copy()
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        out[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return out


def _resampled_mask(path, shape, affine) -> np.ndarray:
    from bolus.io.nifti import load_volume, resample_to_grid

    data, source = load_volume(path)
    return resample_to_grid(data, source, tuple(shape), affine, order=0) > 0


def clinical_subject(
    participant_id: str,
    output_dir,
    methods: Sequence[str],
    row: Mapping,
    *,
    clinical: Mapping | None = None,
    reference: str = "reference_dir",
    out_figure=None,
) -> Path:
    """Readouts of every method of one subject (and of the reference_dir maps when config
    ``reference`` is ``reference_dir`` and the subject has them): writes each method's
    ``desc-<method>_rcbv`` and ``_rcbf``, the reference region mask and
    ``sub-XX_clinical.tsv``; returns the latter. ``out_figure``: the subject's clinical
    figure (:func:`bolus.evaluate.clinical_figures.subject_clinical_figure`).

    Raises :class:`SubjectError` when no reference region can be found (no white matter
    left, an empty user mask) or no method has CBF or CBV."""
    import pandas as pd

    from bolus.evaluate.reference import load_reference_maps, method_maps
    from bolus.evaluate.regions import load_tissue_masks
    from bolus.io import atomic
    from bolus.io.nifti import load_volume, save_like, voxel_size_mm

    s = section("clinical", clinical)
    sp = paths.SubjectPaths(output_dir, participant_id)
    brain, affine = load_volume(sp.brain_mask)
    brain = brain > 0
    spacing = voxel_size_mm(affine)
    tissue = brain & (load_volume(sp.tissue_mask)[0] > 0) if sp.tissue_mask.exists() else brain
    maps = method_maps(sp, methods)
    if not any({"cbv", "cbf"} & set(m) for m in maps.values()):
        raise SubjectError(participant_id, sp.brain_mask.parent, "no CBF or CBV map of any method")
    reference_dir = row.get("reference_dir")
    truth = {}
    if reference == "reference_dir" and reference_dir:
        truth = load_reference_maps(reference_dir, brain.shape, affine)
    base = brain
    if truth:  # where the reference is defined, so every method is read on the same voxels
        base = brain & np.logical_and.reduce([np.isfinite(v) for v in truth.values()])
    labels = load_tissue_masks(participant_id, brain.shape, affine, reference_dir,
                               row.get("tissue_labels"))  # fmt: skip
    lesion = None
    if row.get("lesion_mask"):
        lesion = _resampled_mask(row["lesion_mask"], brain.shape, affine)
    # the hypoperfusion of the first method with a Tmax map (never the reference's: the
    # region must be what a reader without ground truth would draw)
    guide = next((m["tmax"] for m in maps.values() if "tmax" in m), None)
    hypo = None
    if guide is not None:
        hypo = _filled(cl.hypoperfusion(guide, base & tissue, s["mismatch_tmax_s"], spacing,
                                        float(s["min_cluster_ml"])))  # fmt: skip
    # The tissue mask leaves out CSF as voxels of low CBV, which the delayed, dispersed
    # bolus of an ischaemic core also is (it cut 16–30 % out of the simulated cores): the
    # holes of the hypoperfused clusters are tissue whatever their CBV.
    readout_tissue = base & (tissue | hypo) if hypo is not None else base & tissue
    side = row.get("lesion_side") or None
    if side is None and lesion is not None:
        side = cl.lesion_side(lesion, brain, affine)
    if side is None and hypo is not None:
        side = cl.lesion_side(hypo, brain, affine)
    exclude = np.zeros(brain.shape, bool)
    for mask in (lesion, hypo):
        if mask is not None:
            exclude |= mask
    user_region = row.get("reference_region_mask")
    white_matter, source = None, "user"
    if user_region:
        region_mask = _resampled_mask(user_region, brain.shape, affine)
    else:
        region_mask = None
        if s["reference_region"] in ("auto", "labels") and "wm" in labels:
            white_matter, source = labels["wm"], "labels"
        elif s["reference_region"] in ("auto", "template"):
            white_matter, source = template_white_matter(sp.mc_dsc, brain, affine,
                                                         sp.brain_mask.parent), "template"  # fmt: skip
        else:
            raise SubjectError(participant_id, reference_dir,
                               "clinical.reference_region: labels, but no tissue labels")  # fmt: skip
    # the anatomy's white matter where the reference is defined, not the tissue mask's: its
    # low-CBV rule for CSF would drop the low tail of the method's noisy white matter and
    # raise the reference mean (by ≈ 10 % on the simulated demo)
    region = cl.reference_region(
        base, affine, white_matter=white_matter, user_mask=region_mask, exclude=exclude,
        side=side, erosion_voxels=int(s["reference_erosion_voxels"]),
        margin_mm=float(s["lesion_margin_mm"]), min_ml=float(s["reference_min_ml"]),
    )  # fmt: skip
    if not region.any():
        raise SubjectError(participant_id, user_region or sp.brain_mask,
                           f"empty reference region ({source} white matter)")  # fmt: skip
    save_like(region.astype(np.uint8), affine, sp.reference_region_mask, dtype=np.uint8)
    unaffected = None
    if side in ("left", "right"):
        unaffected = cl.hemispheres(brain, affine)["right" if side == "left" else "left"]
    rows, shown, outlines = [], {}, {}
    named = {cl.REFERENCE_METHOD: truth} if truth else {}
    named.update(maps)
    for method, maps_of_method in named.items():
        values, relative = cl.method_readouts(
            maps_of_method, region, readout_tissue, spacing, unaffected=unaffected,
            gm=_within(labels.get("gm"), base), wm=_within(labels.get("wm"), base),
            lesion=_within(lesion, base), clinical=clinical,
        )  # fmt: skip
        rows.append({"participant_id": participant_id, "method": method,
                     "lesion_side": side or "n/a", "reference_region_source": source,
                     **values})  # fmt: skip
        if method != cl.REFERENCE_METHOD:
            for name, data in relative.items():
                save_like(data.astype(np.float32), affine, sp.map(method, name))
        shown[method] = {
            **relative,
            **({"tmax": maps_of_method["tmax"]} if "tmax" in maps_of_method else {}),
        }
        if "cbf" in maps_of_method and "tmax" in maps_of_method:
            outlines[method] = {
                "core": cl.core_mask(maps_of_method["cbf"], maps_of_method["tmax"], readout_tissue,
                                     spacing, unaffected=unaffected, clinical=clinical)[0],
                "hypoperfusion": cl.hypoperfusion(maps_of_method["tmax"], readout_tissue,
                                                  s["mismatch_tmax_s"], spacing,
                                                  float(s["min_cluster_ml"])),
            }  # fmt: skip
    table = pd.DataFrame(rows, columns=[*TABLE_COLUMNS, *cl.readout_columns(clinical)])
    atomic.write_table(sp.clinical_tsv, table, float_format="%.6g", na_rep="n/a")
    if out_figure:
        from bolus.evaluate.clinical_figures import subject_clinical_figure

        subject_clinical_figure(out_figure, shown, brain, region, outlines,
                                title=f"{participant_id}: clinical readouts")  # fmt: skip
    return sp.clinical_tsv


def read_clinical(path):
    import pandas as pd

    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                       dtype={c: str for c in TABLE_COLUMNS})  # fmt: skip


def clinical_verdicts(output_dir, subjects: Sequence[str]) -> tuple[list[str], list[dict]]:
    """(subjects with readouts, verdicts of those whose readouts failed) among the subjects
    that completed every stage (the others appear nowhere in the clinical tables)."""
    from bolus.qc import completed, qc_table, read_verdict

    done = completed(qc_table(output_dir, subjects))
    ok, failed = [], []
    for pid in done:
        path = paths.verdict(output_dir, pid, paths.CLINICAL_VERDICT)
        verdict = read_verdict(path) if path.exists() else {"status": "missing"}
        if (
            verdict.get("status") == "ok"
            and paths.SubjectPaths(output_dir, pid).clinical_tsv.exists()
        ):
            ok.append(pid)
        else:
            failed.append({"participant_id": pid, "status": verdict.get("status", "missing"),
                           "reason": verdict.get("reason", "")})  # fmt: skip
    return ok, failed


def clinical_cohort(
    output_dir, subjects: Sequence[str], *, clinical: Mapping | None = None,
    reference: str = "reference_dir",
) -> dict[str, Path]:  # fmt: skip
    """``metrics/clinical.tsv`` (every completed subject's readouts), the agreement table
    and the Bland–Altman figure of core and Tmax > 6 s volumes."""
    import pandas as pd

    from bolus.evaluate.clinical_figures import clinical_bland_altman
    from bolus.io import atomic

    ok, _ = clinical_verdicts(output_dir, subjects)
    frames = [read_clinical(paths.SubjectPaths(output_dir, pid).clinical_tsv) for pid in ok]
    columns = [*TABLE_COLUMNS, *cl.readout_columns(clinical)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table = table.reindex(columns=columns)
    atomic.write_table(paths.clinical_table(output_dir), table, float_format="%.6g",
                       na_rep="n/a")  # fmt: skip
    label = cl.REFERENCE_METHOD if reference == "reference_dir" else reference
    readouts = [*cl.AGREEMENT_READOUTS[:1], *[cl.tmax_column(t) for t in cl.tmax_thresholds(clinical)],
                *cl.AGREEMENT_READOUTS[1:]]  # fmt: skip
    agreement = cl.agreement_table(table, label, readouts)
    atomic.write_table(paths.clinical_agreement(output_dir), agreement, float_format="%.6g",
                       na_rep="n/a")  # fmt: skip
    mismatch = cl.tmax_column(section("clinical", clinical)["mismatch_tmax_s"])
    figure = clinical_bland_altman(
        paths.study_figure(output_dir, paths.CLINICAL_STUDY_FIGURE),
        table,
        label,
        ("core_ml", mismatch),
    )
    return {"table": paths.clinical_table(output_dir),
            "agreement": paths.clinical_agreement(output_dir), "figure": figure}  # fmt: skip


def method_summary(table, clinical: Mapping | None = None):
    """Per method, the median over subjects of the main readouts (infinite ratios left out),
    the number of subjects meeting the target mismatch, and ``n`` subjects."""
    import pandas as pd

    numeric = table.drop(columns=list(TABLE_COLUMNS)).apply(pd.to_numeric, errors="coerce")
    numeric = numeric.replace([np.inf, -np.inf], np.nan).assign(method=table["method"])
    grouped = numeric.groupby("method", sort=False)
    keep = ["core_ml", *[cl.tmax_column(x) for x in cl.tmax_thresholds(clinical)],
            "mismatch_ml", "hir", "target_mismatch", "wm_rcbv", "gm_rcbv", "lesion_rcbv_mean"]  # fmt: skip
    summary = grouped.median()[[c for c in keep if c in numeric.columns]]
    summary["target_mismatch"] = grouped["target_mismatch"].sum()
    summary["n"] = grouped.size()
    return summary.reset_index()


def clinical_markdown(output_dir, subjects: Sequence[str], clinical: Mapping | None = None) -> str:
    """The clinical section of ``study.md``: readouts per method (median over subjects),
    the agreement with the reference, and the subjects whose readouts failed."""
    import pandas as pd

    from bolus.evaluate.aggregate import markdown_table

    s = section("clinical", clinical)
    t = s["target_mismatch"]
    _, failed = clinical_verdicts(output_dir, subjects)
    table = read_clinical(paths.clinical_table(output_dir))
    agreement_path = paths.clinical_agreement(output_dir)
    agreement = (
        pd.read_csv(agreement_path, sep="\t", na_values=["n/a"], keep_default_na=False)
        if agreement_path.exists()
        else pd.DataFrame()
    )
    text = [
        "## Clinical readouts",
        "",
        "Per subject and method in `clinical.tsv`. rCBV and rCBF are relative to the mean of "
        "the reference region (normal-appearing white matter, away from the lesion, in the "
        "other hemisphere when the lesion's side is known; `desc-referenceregion_mask`). "
        f"Core: CBF < {s['core_rcbf_threshold']:g} × the unaffected hemisphere's mean CBF"
        + (f" where Tmax > {s['core_tmax_s']:g} s" if s["core_tmax_s"] is not None else "")
        + f"; mismatch = Tmax > {s['mismatch_tmax_s']:g} s volume − core; HIR = Tmax > "
        f"{s['hir_tmax_s']:g} s / Tmax > {s['mismatch_tmax_s']:g} s volume; target mismatch "
        f"(DEFUSE 3): core < {t['core_max_ml']:g} ml, ratio ≥ {t['ratio_min']:g}, mismatch "
        f"≥ {t['mismatch_min_ml']:g} ml. Volumes in ml.",
    ]
    if not table.empty:
        text += ["", "Median over subjects (target_mismatch: number of subjects meeting it):",
                 "", markdown_table(method_summary(table, clinical))]  # fmt: skip
    else:
        text += ["", "No readouts."]
    if not agreement.empty:
        shown = agreement.drop(columns=["reference"])
        text += [
            "",
            f"### Agreement with the reference ({agreement['reference'].iloc[0]})",
            "",
            "Across subjects: Bland–Altman bias (method − reference) and 95 % limits of "
            "agreement (bias ± 1.96 SD), ICC(2,1) (two-way random effects, absolute "
            "agreement, single measures; Shrout & Fleiss 1979), and for the target-mismatch "
            "decision the sensitivity and specificity against the reference's.",
            "",
            markdown_table(shown),
        ]
    if failed:
        text += ["", f"Readouts not computed ({len(failed)}; these subjects stay in the "
                 "tables above):", "", markdown_table(pd.DataFrame(failed))]  # fmt: skip
    return "\n".join(text) + "\n"


def notice_unless_drawn(verdict_path, out_figure) -> Path:
    """The subject's clinical figure, or, when the readouts were skipped or failed, a
    notice saying why (so every subject has its figure)."""
    from bolus.evaluate.figures import notice_figure
    from bolus.qc import read_verdict

    out_figure = Path(out_figure)
    if out_figure.exists():
        return out_figure
    verdict = read_verdict(verdict_path)
    title = f"{verdict.get('participant_id', '')}: no clinical readouts"
    return notice_figure(out_figure, title, f"{verdict.get('status')}: {verdict.get('reason')}")


def clinical_report_table(table_tsv, agreement_tsv, out_html, clinical: Mapping | None = None):
    """HTML of the agreement table (with the median readouts per method below, so that its
    size does not grow with the cohort) for the report."""
    import pandas as pd

    from bolus.evaluate.report import html_table

    read = {"sep": "\t", "na_values": ["n/a"], "keep_default_na": False}
    table = pd.read_csv(table_tsv, **read)
    agreement = pd.read_csv(agreement_tsv, **read)
    s = section("clinical", clinical)
    intro = (
        "Agreement of every method's clinical readouts with the reference's across subjects: "
        "Bland–Altman bias (method − reference) and 95 % limits of agreement, ICC(2,1) "
        "(two-way random effects, absolute agreement, single measures; Shrout & Fleiss "
        "1979), sensitivity and specificity of the target-mismatch decision (DEFUSE 3: core < "
        f"{s['target_mismatch']['core_max_ml']:g} ml, ratio ≥ {s['target_mismatch']['ratio_min']:g}, "
        f"mismatch ≥ {s['target_mismatch']['mismatch_min_ml']:g} ml). Volumes in ml; rCBV and "
        "rCBF relative to the reference region (normal-appearing white matter)."
    )
    body = html_table(agreement) if len(agreement) else "<p>No reference: no agreement.</p>"
    # the median per method, not every subject's row: the report keeps its size at any
    # cohort size (every row is in metrics/clinical.tsv)
    body += (
        "<h2>Readouts per method: median over subjects</h2><p>target_mismatch: the number "
        "of subjects meeting it; n: subjects. Every subject's readouts: metrics/clinical.tsv."
        "</p>" + (html_table(method_summary(table, clinical)) if len(table) else "<p>None.</p>")
    )
    import html as _html

    from bolus.evaluate.report import _STYLE

    text = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Clinical readouts</title>"
        f"<style>{_STYLE}</style></head><body><h1>Clinical readouts</h1>"
        f"<p>{_html.escape(intro)}</p>{body}</body></html>\n"
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(text, encoding="utf-8")
    return out_html


def append_clinical_markdown(output_dir, subjects: Sequence[str], clinical=None) -> Path:
    """Add :func:`clinical_markdown` to the end of ``metrics/study.md``."""
    from bolus.io import atomic

    markdown = paths.study_markdown(output_dir)
    text = markdown.read_text() if markdown.exists() else ""
    atomic.write_text(markdown, text.rstrip("\n") + "\n\n" + clinical_markdown(
        output_dir, subjects, clinical))  # fmt: skip
    return markdown
