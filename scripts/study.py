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
    if s.input.clinical:  # the clinical section of study.md (rules/clinical.smk)
        from bolus.evaluate.clinical_files import append_clinical_markdown

        append_clinical_markdown(s.config["output_dir"], s.params.subjects, s.params.clinical)
