from bolus.smk import run_stage
from bolus.stages import perfusion_subject

s = snakemake  # noqa: F821 (injected by Snakemake)
run_stage(
    s,
    "perfusion",
    lambda: perfusion_subject(
        s.params.mc,
        s.params.json,
        s.params.mask,
        s.params.conc,
        s.params.aif,
        s.params.aif_mask,
        s.params.prefix,
        config=s.params.config,
    ),
)
