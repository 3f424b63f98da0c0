from bolus.smk import logged
from bolus.stages import study_outputs

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    study_outputs(
        s.params.participants,
        s.params.subjects,
        s.config["output_dir"],
        seed=s.params.seed,
        study=s.params.study,
        models=s.params.models,
    )
