from bolus.smk import logged
from bolus.stages import preprocess_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    preprocess_subject(
        s.input[0],
        s.output.mc,
        s.output.motion,
        s.output.mask,
        motion=s.params.motion,
        transform=s.params.transform,
        fd_threshold_mm=s.params.fd_threshold_mm,
        workers=s.threads,
        user_mask=s.params.user_mask,
    )
