from bolus.evaluate.clinical_files import clinical_subject, notice_unless_drawn
from bolus.smk import run_stage

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
run_stage(
    s,
    "clinical",
    lambda: clinical_subject(
        s.wildcards.subject, s.config["output_dir"], p.methods, p.row,
        clinical=p.clinical, reference=p.reference, out_figure=s.output.figure,
    ),
)  # fmt: skip
notice_unless_drawn(s.output.verdict, s.output.figure)
