from bolus.learn.stages import tof_training_data_stage
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    tof_training_data_stage(
        s.params.rows, s.config["output_dir"], s.output[0], registration=s.params.registration
    )
