from bolus.learn.tof import predict_stage
from bolus.smk import run_stage

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
run_stage(
    s,
    s.rule,
    lambda: predict_stage(
        s.input.model, p.output_dir, s.wildcards.subject, p.maps, s.threads, p.config
    ),
)
