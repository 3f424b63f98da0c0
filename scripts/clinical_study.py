from bolus.evaluate.clinical_files import clinical_cohort
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
with logged(s):
    clinical_cohort(s.config["output_dir"], p.subjects, clinical=p.clinical, reference=p.reference)
