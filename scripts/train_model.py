from bolus.learn.stages import train_stage
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
with logged(s):
    train_stage(
        s.wildcards.model,
        s.input[0],
        s.output[0],
        training=p.training,
        model_params=p.model_params,
        constants=p.constants,
        seed=p.seed,
        threads=s.threads,
        finetune=p.finetune,
    )
