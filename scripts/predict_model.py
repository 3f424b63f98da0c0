from bolus.learn.stages import predict_stage
from bolus.smk import run_stage

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
run_stage(
    s,
    s.rule,
    lambda: predict_stage(
        p.model, s.input.model, s.config["output_dir"], s.wildcards.subject, device=p.device,
        threads=s.threads,
    ),
)  # fmt: skip
