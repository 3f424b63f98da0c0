from bolus.learn.stages import pretrained_stage
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    pretrained_stage(s.wildcards.model, s.output[0], s.config["output_dir"])
