"""The one builder of every output path (BIDS-derivatives names).

Every rule, script and test asks this module for a path; no path pattern is
written anywhere else.
"""

from __future__ import annotations

from pathlib import Path

MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp")
#: the unit of every map
MAP_UNITS = {
    "cbf": "ml/100 g/min",
    "cbv": "ml/100 g",
    "mtt": "s",
    "tmax": "s",
    "ttp": "s",
}


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


#: every per-subject file: attribute of :class:`SubjectPaths` → (suffix, desc, extension)
SUBJECT_FILES = {
    "dsc": ("dsc", None, ".nii.gz"),  # the converted series
    "dsc_json": ("dsc", None, ".json"),  # its de-identified sidecar
    "mc_dsc": ("dsc", "mc", ".nii.gz"),  # motion-corrected
    "motion_tsv": ("motion", None, ".tsv"),
    "brain_mask": ("mask", "brain", ".nii.gz"),
    # brain without CSF and large vessels, for metrics (written by the perfusion stage)
    "tissue_mask": ("mask", "tissue", ".nii.gz"),
    "conc": ("dsc", "conc", ".nii.gz"),  # concentration (ΔR2* 1/s, or HU)
    "aif_tsv": ("aif", None, ".tsv"),
    "aif_mask": ("mask", "aif", ".nii.gz"),
    # Boxerman–Weisskoff leakage K2 map (1/s), with concentration.leakage_correction
    "leakage_k2": ("k2", "leakage", ".nii.gz"),
    "metrics_tsv": ("metrics", None, ".tsv"),
    "tof": ("tof", None, ".nii.gz"),  # the converted TOF-MRA, in its own grid
    "tof_json": ("tof", None, ".json"),
    "coreg_tof": ("tof", "coreg", ".nii.gz"),  # the TOF-MRA registered onto the DSC grid
}


class SubjectPaths:
    """Every per-subject output for one ``participant_id``: BIDS-derivatives names
    ``<output_dir>/sub-<label>/perf/sub-<label>[_desc-<desc>]_<suffix><ext>``, one attribute
    per :data:`SUBJECT_FILES` entry, plus each method's maps (:meth:`map`).

    The ``bolus`` commands name files by a prefix instead (:meth:`at_prefix`) and may take
    inputs from elsewhere (:meth:`with_input`); the stages see the same object either way.
    """

    def __init__(self, output_dir: str | Path, participant_id: str, *, prefix=None, inputs=None):
        self.root = Path(output_dir)
        self.pid = participant_id
        self._prefix = Path(prefix) if prefix is not None else None
        self._inputs = dict(inputs or {})

    @classmethod
    def at_prefix(cls, prefix: str | Path) -> SubjectPaths:
        """Files ``<prefix>_…`` (``prefix``: ``<folder>/<participant_id>``), as the ``bolus``
        commands write them."""
        prefix = Path(prefix)
        return cls(prefix.parent, prefix.name.split("_")[0], prefix=prefix)

    def with_input(self, **files) -> SubjectPaths:
        """A copy whose named files (attributes of :data:`SUBJECT_FILES`) are elsewhere."""
        unknown = set(files) - set(SUBJECT_FILES)
        if unknown:
            raise AttributeError(f"no subject file {', '.join(sorted(unknown))}")
        return SubjectPaths(
            self.root, self.pid, prefix=self._prefix, inputs={**self._inputs, **files}
        )

    def _p(self, suffix: str, desc: str | None = None, extension: str = ".nii.gz") -> Path:
        if self._prefix is not None:
            return Path(f"{self._prefix}{f'_desc-{desc}' if desc else ''}_{suffix}{extension}")
        return Path(bids(self.root, self.pid, suffix, desc=desc, extension=extension))

    def __getattr__(self, name: str) -> Path:
        if name.startswith("_") or name not in SUBJECT_FILES:
            raise AttributeError(name)
        if name in self._inputs:
            return Path(self._inputs[name])
        return self._p(*SUBJECT_FILES[name])

    @property
    def prefix(self) -> Path:
        """``<output_dir>/sub-<label>/perf/sub-<label>``: what ``bolus`` commands take as
        ``out_prefix``."""
        return self._prefix if self._prefix is not None else self.dsc.parent / self.pid

    def map(self, method: str, name: str) -> Path:
        return self._p(name, desc=method)

    def maps(self, method: str, names=MAPS) -> dict[str, Path]:
        return {name: self.map(method, name) for name in names}

    def verdict(self, stage: str) -> Path:
        return verdict(self.root, self.pid, stage)

    @property
    def clinical_tsv(self) -> Path:
        """The subject's clinical readouts, a row per method (``sub-XX_clinical.tsv``)."""
        return self._p("clinical", extension=".tsv")

    @property
    def reference_region_mask(self) -> Path:
        """The reference region of rCBV and rCBF (normal-appearing white matter)."""
        return self._p("mask", desc="referenceregion")


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


def svd_stage(method: str) -> str:
    """The stage name (verdict, log) of one SVD method's maps: ``maps_<method>``."""
    return f"maps_{method}"


def predict_stage(model: str) -> str:
    """The stage name (verdict, log) of one learned model's prediction: ``predict_<model>``."""
    return f"predict_{model}"


def method_stage(method: str) -> str:
    """The stage that writes a method's maps: an SVD method's ``maps_<method>``, a learned
    model's ``predict_<model>``."""
    from bolus.perfusion.methods import METHODS

    return svd_stage(method) if method in METHODS else predict_stage(method)


def log_file(output_dir: str | Path, participant_id: str, stage: str) -> Path:
    """``<output_dir>/logs/<participant_id>/<stage>.log``; ``participant_id`` ``models`` holds
    the cohort's training logs, and a cohort-wide job's log is :func:`cohort_log`."""
    return Path(output_dir) / "logs" / participant_id / f"{stage}.log"


def cohort_log(output_dir: str | Path, job: str) -> Path:
    """``<output_dir>/logs/<job>.log`` of a job over the whole cohort (study, figures)."""
    return Path(output_dir) / "logs" / f"{job}.log"


def benchmark_file(output_dir: str | Path, participant_id: str, stage: str) -> Path:
    """Wall time and memory of one job (Snakemake's benchmark table)."""
    return Path(output_dir) / "benchmarks" / participant_id / f"{stage}.tsv"


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


def model_verdict(output_dir: str | Path, model: str) -> Path:
    """``<output_dir>/models/<model>/verdict.json``: the training job's verdict (ok with the
    maps the model learned, ``skipped`` or ``failed`` with the reason), the output of the
    training rule and the input of the model's predictions."""
    return model_dir(output_dir, model) / "verdict.json"


def training_data_dir(output_dir: str | Path) -> Path:
    """The cohort's memory-mapped training data (``meta.json`` marks it complete)."""
    return models_dir(output_dir) / "data"


def tof_training_data_dir(output_dir: str | Path) -> Path:
    """The cohort's memory-mapped TOF training data of pix2pix (``meta.json`` marks it
    complete)."""
    return training_data_dir(output_dir) / "tof"


def training_meta(output_dir: str | Path, layout: str) -> Path:
    """The ``meta.json`` of the training data a layout reads (``tof``: pix2pix's volumes;
    else the DSC voxels and slices); it records ``status`` and, when no data could be
    written, the reason."""
    folder = tof_training_data_dir(output_dir) if layout == "tof" else training_data_dir(output_dir)
    return folder / "meta.json"
