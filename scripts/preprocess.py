from bolus.smk import run_stage, subject_paths
from bolus.stages import preprocess_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
run_stage(
    s,
    "preprocess",
    lambda: preprocess_subject(
        subject_paths(s), s.params.motion, workers=s.threads, user_mask=s.params.row["brain_mask"]
    ),
)
