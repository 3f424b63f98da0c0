from bolus.learn.stages import training_data_stage
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    training_data_stage(s.params.rows, s.params.output_dir, s.output[0], config=s.params.config)
