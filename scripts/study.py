from bolus.smk import logged
from bolus.stages import study_outputs

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    study_outputs(
        s.params.participants,
        s.params.subjects,
        s.params.output_dir,
        seed=s.params.seed,
        config=s.params.config,
    )
    if s.input.clinical:  # the clinical section of study.md (rules/clinical.smk)
        from bolus.evaluate.clinical_files import append_clinical_markdown

        append_clinical_markdown(s.params.output_dir, s.params.subjects, s.params.clinical)
