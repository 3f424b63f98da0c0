from bolus.evaluate.clinical_files import clinical_report_table
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    clinical_report_table(
        s.input.table, s.input.agreement, s.output.html, clinical=s.params.clinical
    )
