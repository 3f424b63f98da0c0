from bolus.evaluate.report import subject_figures_after
from bolus.smk import logged, subject_paths

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
with logged(s):
    subject_figures_after(
        s.input.previous, subject_paths(s), p.methods, *s.output,  # montage, aif, motion
        reference=p.reference, registration=p.registration, lesion=p.lesion,
        modality=p.modality, reference_dir=p.row["reference_dir"],
    )  # fmt: skip
