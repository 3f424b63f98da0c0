from bolus.evaluate.report import study_figures
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    study_figures(
        s.input.subjects, s.config["output_dir"], models=s.params.models, scope=s.params.scope
    )
