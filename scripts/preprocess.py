from bolus.smk import run_stage
from bolus.stages import preprocess_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
run_stage(
    s,
    "preprocess",
    lambda: preprocess_subject(
        s.params.dsc,
        s.params.mc,
        s.params.motion_tsv,
        s.params.mask,
        motion=s.params.motion,
        transform=s.params.transform,
        fd_threshold_mm=s.params.fd_threshold_mm,
        workers=s.threads,
        user_mask=s.params.user_mask,
    ),
)
