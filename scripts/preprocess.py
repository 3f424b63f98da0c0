from bolus.smk import run_stage
from bolus.stages import preprocess_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
run_stage(
    s,
    "preprocess",
    lambda: preprocess_subject(
        p.dsc, p.mc, p.motion_tsv, p.mask, motion=p.motion, transform=p.transform,
        fd_threshold_mm=p.fd_threshold_mm, workers=s.threads, user_mask=p.user_mask,
    ),
)  # fmt: skip
