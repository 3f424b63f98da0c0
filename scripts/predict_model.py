from bolus.learn.stages import predict_stage
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    predict_stage(
        s.input.model,
        s.params.output_dir,
        s.wildcards.subject,
        s.output,
        s.threads,
        s.params.config,
    )
