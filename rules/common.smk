# Configuration and sample sheet, validated before any job runs; path helpers.
import os
import sys
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(
    0, str(Path(workflow.basedir) / "src")
)  # the library, even when not installed
# the checkout that envs/*.post-deploy.sh install bolus from (--sdm conda)
os.environ.update(BOLUS_SOURCE=str(Path(workflow.basedir)))

from bolus import paths  # noqa: E402
from bolus.config import validate_config  # noqa: E402
from bolus.participants import read_participants  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")
config.update(validate_config(config))

OUT = config["output_dir"]
PARTICIPANTS = read_participants(config["participants"], seed=config["seed"])
SUBJECTS = list(PARTICIPANTS["participant_id"])


wildcard_constraints:
    subject="sub-[A-Za-z0-9]+",
    method="|".join(config["svd"]["methods"]),


def row(wildcards):
    """The subject's participants.tsv row, paths resolved, as a plain dict."""
    return {k: v for k, v in PARTICIPANTS.loc[wildcards.subject].items()}


def sp(subject, attribute):
    """One per-subject output path (see bolus.paths.SubjectPaths)."""
    return str(getattr(paths.SubjectPaths(OUT, subject), attribute))


def subject_maps(subject, methods):
    return [
        str(paths.SubjectPaths(OUT, subject).map(m, name))
        for m in methods
        for name in paths.MAPS
    ]


def inspection(subject):
    return f"{OUT}/qc/{subject}_inspect.json"


def logfile(subject, stage):
    return f"{OUT}/logs/{subject}/{stage}.log"


def benchmark(subject, stage):
    """Wall time and memory of one job (Snakemake's benchmark table)."""
    return f"{OUT}/benchmarks/{subject}/{stage}.tsv"


def verdict(subject, stage):
    """A stage's verdict (ok / failed with the reason / skipped): the declared output of
    every per-subject rule, and the input of the next one (see bolus.smk.run_stage)."""
    return str(paths.verdict(OUT, subject, stage))


def final_verdicts():
    """Each subject's last verdict (metrics'): the chain is verdict-driven, so a subject that
    fails a stage, inspection included, leaves `skipped` verdicts after it (bolus.qc reads
    a chain up to its first verdict that is not ok)."""
    return [verdict(s, "metrics") for s in SUBJECTS]


def usable_subjects():
    """Every subject: `inspect` is a plain rule, and the stages after it skip a subject whose
    previous verdict is not ok (no checkpoint, so the DAG is built once, not re-evaluated
    after every subject's inspection)."""
    return list(SUBJECTS)


def study_outputs():
    return [
        str(paths.subjects_table(OUT)),
        str(paths.study_table(OUT)),
        str(paths.study_markdown(OUT)),
        str(paths.qc_table(OUT)),
    ]


onsuccess:
    from bolus.smk import cohort_finished

    # exit status 3: the study tables are written, but some subjects were excluded
    status = cohort_finished(OUT)
    if status:
        sys.exit(status)


onerror:
    from bolus.smk import cohort_finished

    cohort_finished(OUT, crashed=True)


# ----------------------------------------------------------------------------- learned models
from bolus.models import model_maps  # noqa: E402

MODELS = list(config["models"])


def model_map_paths(subject, model):
    """The maps one model predicts for one subject (see bolus.models.MODELS)."""
    return [
        str(paths.SubjectPaths(OUT, subject).map(model, name))
        for name in model_maps(model)
    ]


def prediction_verdicts(subject):
    """The verdicts of every configured model's prediction for one subject."""
    return [verdict(subject, f"predict_{m}") for m in MODELS]


def training_rows():
    """participants.tsv rows of the train/val subjects; those whose perfusion stage did not
    succeed (inspection included) are left out when the training data are written."""
    return [
        dict(PARTICIPANTS.loc[s].items())
        for s in usable_subjects()
        if PARTICIPANTS.loc[s, "split"] in ("train", "val")
    ]


def training_meta(model):
    """The training data a model reads: TOF volumes for pix2pix (rules/tof.smk), else the
    DSC layouts."""
    if model == "pix2pix":
        return str(paths.tof_training_data_dir(OUT) / "meta.json")
    return str(paths.training_data_dir(OUT) / "meta.json")
