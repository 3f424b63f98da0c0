from bolus.learn.stages import train_stage
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    train_stage(s.wildcards.model, s.input[0], s.params.model_dir, s.threads, s.params.config)
