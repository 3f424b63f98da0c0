"""The one builder of every output path (BIDS-derivatives names).

Every rule, script and test asks this module for a path; no path pattern is
written anywhere else.
"""

from __future__ import annotations

from pathlib import Path

MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp")
#: the unit of every map (DESIGN.md, "Units and conventions")
MAP_UNITS = {
    "cbf": "ml/100 g/min",
    "cbv": "ml/100 g",
    "mtt": "s",
    "tmax": "s",
    "ttp": "s",
}
SVD_METHODS = ("ssvd", "csvd", "osvd")


def bids(
    root: str | Path,
    subject: str,
    suffix: str,
    *,
    desc: str | None = None,
    extension: str = ".nii.gz",
    datatype: str = "perf",
) -> str:
    """``<root>/sub-<label>/<datatype>/sub-<label>[_desc-<desc>]_<suffix><extension>``.

    ``subject`` is a ``participant_id`` (``sub-`` prefix added when missing) or a
    Snakemake wildcard such as ``{subject}`` holding the whole ``participant_id``.
    """
    sub = subject if subject.startswith(("sub-", "{")) else f"sub-{subject}"
    name = sub
    if desc:
        name += f"_desc-{desc}"
    name += f"_{suffix}{extension}"
    return str(Path(root) / sub / datatype / name)


class SubjectPaths:
    """Every per-subject output of DESIGN.md for one ``participant_id``."""

    def __init__(self, output_dir: str | Path, participant_id: str):
        self.root = Path(output_dir)
        self.pid = participant_id

    def _p(self, suffix: str, desc: str | None = None, extension: str = ".nii.gz") -> Path:
        return Path(bids(self.root, self.pid, suffix, desc=desc, extension=extension))

    @property
    def dsc(self) -> Path:
        return self._p("dsc")

    @property
    def dsc_json(self) -> Path:
        return self._p("dsc", extension=".json")

    @property
    def mc_dsc(self) -> Path:
        return self._p("dsc", desc="mc")

    @property
    def motion_tsv(self) -> Path:
        return self._p("motion", extension=".tsv")

    @property
    def brain_mask(self) -> Path:
        return self._p("mask", desc="brain")

    @property
    def tissue_mask(self) -> Path:
        """Brain without CSF and large vessels, for metrics (written by the perfusion stage)."""
        return self._p("mask", desc="tissue")

    @property
    def conc(self) -> Path:
        return self._p("dsc", desc="conc")

    @property
    def aif_tsv(self) -> Path:
        return self._p("aif", extension=".tsv")

    @property
    def aif_mask(self) -> Path:
        return self._p("mask", desc="aif")

    @property
    def leakage_k2(self) -> Path:
        """Boxerman–Weisskoff leakage K2 map (1/s), with ``concentration.leakage_correction``."""
        return self._p("k2", desc="leakage")

    def map(self, method: str, name: str) -> Path:
        return self._p(name, desc=method)

    def maps(self, method: str) -> dict[str, Path]:
        return {name: self.map(method, name) for name in MAPS}

    @property
    def metrics_tsv(self) -> Path:
        return self._p("metrics", extension=".tsv")

    @property
    def clinical_tsv(self) -> Path:
        """The subject's clinical readouts, a row per method (``sub-XX_clinical.tsv``)."""
        return self._p("clinical", extension=".tsv")

    @property
    def reference_region_mask(self) -> Path:
        """The reference region of rCBV and rCBF (normal-appearing white matter)."""
        return self._p("mask", desc="referenceregion")

    @property
    def tof(self) -> Path:
        """The converted TOF-MRA, in its own grid (``sub-XX_tof.nii.gz``)."""
        return self._p("tof")

    @property
    def tof_json(self) -> Path:
        return self._p("tof", extension=".json")

    @property
    def coreg_tof(self) -> Path:
        """The TOF-MRA registered and resampled onto the DSC grid."""
        return self._p("tof", desc="coreg")


def map_prefix(prefix: str | Path, method: str, name: str) -> Path:
    """``OUT_PREFIX_desc-<method>_<map>.nii.gz`` as written by ``bolus maps``."""
    return Path(f"{prefix}_desc-{method}_{name}.nii.gz")


def metrics_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "metrics"


def subjects_table(output_dir: str | Path) -> Path:
    return metrics_dir(output_dir) / "subjects.tsv"


def study_table(output_dir: str | Path) -> Path:
    return metrics_dir(output_dir) / "study.tsv"


def study_markdown(output_dir: str | Path) -> Path:
    return metrics_dir(output_dir) / "study.md"


def qc_table(output_dir: str | Path) -> Path:
    return Path(output_dir) / "qc.tsv"


def paired_table(output_dir: str | Path) -> Path:
    """Every method against the baseline, subject by subject (Wilcoxon, Holm)."""
    return metrics_dir(output_dir) / "paired.tsv"


def clinical_table(output_dir: str | Path) -> Path:
    """Clinical readouts, one row per subject × method (the reference's too)."""
    return metrics_dir(output_dir) / "clinical.tsv"


def clinical_agreement(output_dir: str | Path) -> Path:
    """Agreement of every method's clinical readouts with the reference's across subjects."""
    return metrics_dir(output_dir) / "clinical_agreement.tsv"


#: clinical figures: per subject ``figures/sub-XX/sub-XX_clinical.png``; per study
#: ``figures/clinical_bland_altman.png`` (core and Tmax > 6 s volumes)
CLINICAL_SUBJECT_FIGURE = "clinical"
CLINICAL_STUDY_FIGURE = "clinical_bland_altman"
#: the per-subject verdict of the clinical readouts (not a stage of :data:`STAGES`: a subject
#: whose readouts fail keeps its place in the study tables)
CLINICAL_VERDICT = "clinical"


def report_table(output_dir: str | Path, name: str) -> Path:
    """HTML rendering of a study table for the report: ``metrics/<name>.html``
    (``study``, ``paired``, ``excluded``)."""
    return metrics_dir(output_dir) / f"{name}.html"


def figures_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "figures"


#: per-subject figures: ``figures/sub-<label>/sub-<label>_<kind>.png``
SUBJECT_FIGURES = ("montage", "aif", "motion")


def subject_figure(output_dir: str | Path, participant_id: str, kind: str) -> Path:
    """``<output_dir>/figures/sub-<label>/sub-<label>_<kind>.png`` (kind: montage, aif,
    motion)."""
    return figures_dir(output_dir) / participant_id / f"{participant_id}_{kind}.png"


#: study figures: a box plot per agreement metric (panels map × region, a box per method),
#: the lesion agreement box plot, Bland–Altman and scatter plots of regional means
STUDY_FIGURES = (
    "boxplot_mae",
    "boxplot_rmse",
    "boxplot_nrmse",
    "boxplot_ssim",
    "boxplot_psnr",
    "boxplot_pcc",
    "boxplot_scc",
    "boxplot_lesion",
    "bland_altman",
    "scatter",
)


def study_figure(output_dir: str | Path, name: str) -> Path:
    """``<output_dir>/figures/<name>.png`` (e.g. ``boxplot_nrmse``, ``bland_altman``)."""
    return figures_dir(output_dir) / f"{name}.png"


def report_html(output_dir: str | Path) -> Path:
    """The Snakemake HTML report (``snakemake --report``)."""
    return Path(output_dir) / "report.html"


#: the per-subject stages, in order; each leaves a verdict ``qc/<participant_id>_<stage>.json``
STAGES = ("inspect", "convert", "preprocess", "perfusion", "metrics")


def verdict(output_dir: str | Path, participant_id: str, stage: str) -> Path:
    """``<output_dir>/qc/<participant_id>_<stage>.json``: ok / failed (with the reason) /
    skipped, written by every per-subject stage (see :mod:`bolus.qc`)."""
    return Path(output_dir) / "qc" / f"{participant_id}_{stage}.json"


def verdict_output_dir(verdict_path: str | Path) -> Path:
    """The output folder of a :func:`verdict` path (its inverse)."""
    return Path(verdict_path).parent.parent


def metrics_output_dir(metrics_file: str | Path) -> Path:
    """The output folder of a file of :func:`metrics_dir` (e.g. :func:`clinical_table`)."""
    return Path(metrics_file).parent.parent


def log_file(output_dir: str | Path, participant_id: str, stage: str) -> Path:
    return Path(output_dir) / "logs" / participant_id / f"{stage}.log"


def excluded_table(output_dir: str | Path) -> Path:
    return metrics_dir(output_dir) / "excluded.tsv"


def models_dir(output_dir: str | Path) -> Path:
    """``<output_dir>/models``: the cohort's training data and every trained model."""
    return Path(output_dir) / "models"


def model_dir(output_dir: str | Path, model: str) -> Path:
    """``<output_dir>/models/<model>/``: checkpoint, model, training curves, config used."""
    return models_dir(output_dir) / model


def model_file(output_dir: str | Path, model: str) -> Path:
    """The trained model (best weights and what prediction needs)."""
    return model_dir(output_dir, model) / "model.pt"


def training_data_dir(output_dir: str | Path) -> Path:
    """The cohort's memory-mapped training data (``meta.json`` marks it complete)."""
    return models_dir(output_dir) / "data"


def tof_training_data_dir(output_dir: str | Path) -> Path:
    """The cohort's memory-mapped TOF training data of pix2pix (``meta.json`` marks it
    complete)."""
    return training_data_dir(output_dir) / "tof"
