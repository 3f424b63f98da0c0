from bolus.learn.stages import training_data_stage
from bolus.smk import logged

s = snakemake  # noqa: F821 (injected by Snakemake)
p = s.params
with logged(s):
    training_data_stage(
        p.rows,
        s.config["output_dir"],
        s.output[0],
        training={"voxels_per_subject": p.voxels_per_subject, "lesion_tmax_s": p.lesion_tmax_s},
        seed=p.seed,
        registration=p.registration,
        grid=p.grid,
    )
