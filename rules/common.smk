# Configuration and sample sheet, validated before any job runs; what each rule's jobs read.
#
# A rule's params carry exactly what its job reads: the config sections or keys it uses and
# the columns of the subject's own participants.tsv row, never the whole config, so that
# Snakemake's params trigger reruns the jobs an edit changes and no other. Input data a
# user may replace (reference maps, masks, NIfTI series) are inputs where they exist; a
# DICOM folder's content is tracked by its fingerprint (bolus.participants.source_fingerprint).
import os
import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(workflow.basedir) / "src")
)  # the library, even when not installed
# the checkout that envs/*.post-deploy.sh install bolus from (--sdm conda)
os.environ.update(BOLUS_SOURCE=str(Path(workflow.basedir)))

from bolus import paths  # noqa: E402
from bolus.config import validate_config  # noqa: E402
from bolus.models import MODELS as MODEL_INFO  # noqa: E402
from bolus.participants import read_participants, source_fingerprint  # noqa: E402
from bolus.weights import model_source, shipped, shipped_grid  # noqa: E402

# the schema check, once, with every default filled in (bolus.config; schemas/)
config.update(validate_config(config))

OUT = config["output_dir"]
PARTICIPANTS = read_participants(config["participants"], seed=config["seed"])
SUBJECTS = list(PARTICIPANTS.index)
ROWS = {pid: row for pid, row in zip(SUBJECTS, PARTICIPANTS.to_dict("records"))}
for _pid in SUBJECTS:
    ROWS[_pid]["participant_id"] = _pid
METHODS = list(config["svd"]["methods"])
MODELS = list(config["models"])


wildcard_constraints:
    subject="sub-[A-Za-z0-9]+",
    method="|".join(METHODS),


def columns(*names):
    """params function: the subject's participants.tsv row, these columns only (editing
    another column, or another subject's row, reruns nothing of this job)."""

    def of(wildcards):
        row = ROWS[wildcards.subject]
        return {"participant_id": wildcards.subject, **{n: row.get(n) for n in names}}

    return of


def subject_files(subject, *names):
    """The files a subject's row names in these columns, where they exist (a reference_dir:
    the reference maps in it): inputs, so that replacing one reruns the job; a missing one
    is the stage's to report, for that subject alone."""
    from bolus.evaluate.reference import reference_files

    row = ROWS[subject]
    found = []
    for name in names:
        value = row.get(name)
        if not value:
            continue
        if name == "reference_dir":
            found += [str(p) for p in reference_files(value).values()]
        elif os.path.isfile(value):
            found.append(value)
    return found


def row_files(*names):
    """input function: :func:`subject_files` of the job's subject."""
    return lambda wildcards: subject_files(wildcards.subject, *names)


def fingerprint(*names):
    """params function: size and modification time of every file under the row's source
    folders or files (a replaced DICOM export reruns the subject's chain)."""

    def of(wildcards):
        row = ROWS[wildcards.subject]
        return {n: source_fingerprint(row.get(n)) for n in names if row.get(n)}

    return of


def sp(wildcards):
    return paths.SubjectPaths(OUT, wildcards.subject)


def verdict(subject, stage):
    """A stage's verdict (ok / failed with the reason / skipped): the declared output of
    every per-subject rule, and the input of the next one (see bolus.smk.run_stage)."""
    return str(paths.verdict(OUT, subject, stage))


def logfile(subject, stage):
    return str(paths.log_file(OUT, subject, stage))


def benchmark(subject, stage):
    return str(paths.benchmark_file(OUT, subject, stage))


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


# ----------------------------------------------------------------------------- per stage
def method_config(method):
    """The part of the svd section one method reads (bolus.perfusion.methods)."""
    from bolus.perfusion.methods import get_method

    return get_method(method).config(config["svd"])


#: every SVD method's verdict of the job's subject (patterns: no input function to call)
SVD_VERDICTS = [verdict("{subject}", paths.svd_stage(m)) for m in METHODS]


def training_rows(layout="voxels"):
    """The train/val rows (the columns the training data read), those with a TOF-MRA for
    the TOF layout; a subject whose perfusion stage did not succeed is left out when the
    data are written."""
    keep = ("participant_id", "split", "reference_dir")
    return [
        {k: ROWS[s].get(k) for k in keep}
        for s in SUBJECTS
        if ROWS[s]["split"] in ("train", "val")
        and (layout != "tof" or s in TOF_SUBJECTS)
    ]


def training_inputs(stage, layout="voxels"):
    def of(wildcards):
        rows = training_rows(layout)
        found = [verdict(r["participant_id"], stage) for r in rows]
        for r in rows:
            found += subject_files(r["participant_id"], "reference_dir")
        return found

    return of


def model_layout(model):
    return MODEL_INFO[model].layout


#: where each model's weights come from (training.source; bolus.weights.model_source)
SOURCES = {
    m: model_source(
        m,
        config["training"]["source"],
        any(r["reference_dir"] and r["split"] == "train" for r in training_rows()),
    )
    for m in MODELS
}
#: the models a job trains (from scratch or from the shipped weights), the others are the
#: shipped weights as they are (no training data, no training job)
TRAINED = [m for m in MODELS if SOURCES[m] != "pretrained"]
PRETRAINED = [m for m in MODELS if SOURCES[m] == "pretrained"]


def shipped_checksum(model, used=True):
    """The SHA-256 of the shipped weights a job uses (a param: new weights redo it)."""
    if not used:
        return None
    return shipped().get(model, {}).get("sha256")


def training_grid():
    """The training data's time grid: the shipped weights' when a model fine-tunes them,
    else None (the first training subject's)."""
    for m in MODELS:
        if SOURCES[m] == "finetune":
            return shipped_grid(m)
    return None


def prediction_input(model):
    """What a model's prediction reads besides the model: the perfusion stage's outputs, or
    the coregistered TOF-MRA (pix2pix)."""
    return "tof" if model_layout(model) == "tof" else "perfusion"


#: subjects with a TOF-MRA: only they get the TOF models' jobs (registration, prediction)
TOF_SUBJECTS = {
    s for s in SUBJECTS if ROWS[s].get("tof_dicom_dir") or ROWS[s].get("tof_nifti")
}
# what the config check already knows, said before any job runs
if any(model_layout(m) == "tof" for m in MODELS) and not TOF_SUBJECTS:
    print(
        "bolus: no subject of participants.tsv has a TOF-MRA (tof_dicom_dir or tof_nifti): "
        + ", ".join(m for m in MODELS if model_layout(m) == "tof")
        + " will be skipped",
        file=sys.stderr,
    )


#: every model's prediction verdict of the job's subject (patterns), TOF models aside
PREDICTION_VERDICTS = [
    verdict("{subject}", paths.predict_stage(m))
    for m in MODELS
    if model_layout(m) != "tof"
]


def tof_prediction_verdicts(wildcards):
    """The TOF models' prediction verdicts, for a subject with a TOF-MRA."""
    if wildcards.subject not in TOF_SUBJECTS:
        return []
    return [
        verdict(wildcards.subject, paths.predict_stage(m))
        for m in MODELS
        if model_layout(m) == "tof"
    ]


def evaluated_methods():
    """Every method whose maps may exist: the SVD methods, then the learned models."""
    return METHODS + MODELS
