from bolus.evaluate.report import report_tables
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
with logged(s):
    report_tables(
        s.input.study,
        s.input.paired,
        s.input.qc,
        s.input.subjects,
        s.output.study,
        s.output.paired,
        s.output.excluded,
        models=s.params.models,
        scope=s.params.scope,
    )
