# Learned models: training data once per cohort, one training job per model (GPU nodes on a
# cluster: resources in profiles/default), one prediction job per subject and model.


rule training_data:
    input:
        lambda wc: [verdict(r["participant_id"], "perfusion") for r in training_rows()],
    output:
        str(paths.training_data_dir(OUT) / "meta.json"),
    log:
        f"{OUT}/logs/models/training_data.log",
    conda:
        "../envs/models.yaml"
    params:
        rows=lambda wc: training_rows(),
        output_dir=lambda wc, output: str(Path(output[0]).parents[2]),
        config=config,
    script:
        "../scripts/training_data.py"


rule train_model:
    input:
        lambda wc: training_meta(wc.model),
    output:
        str(paths.model_file(OUT, "{model}")),
    log:
        f"{OUT}/logs/models/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/models/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(MODELS) or "none",
    conda:
        "../envs/models.yaml"
    params:
        model_dir=lambda wc: str(paths.model_dir(OUT, wc.model)),
        config=config,
    script:
        "../scripts/train_model.py"


for _model in [m for m in MODELS if m != "pix2pix"]:  # pix2pix: rules/tof.smk

    rule:
        name:
            f"predict_{_model}"
        input:
            previous=verdict("{subject}", "perfusion"),
            model=str(paths.model_file(OUT, _model)),
        output:
            verdict=verdict("{subject}", f"predict_{_model}"),
        log:
            logfile("{subject}", f"predict_{_model}"),
        benchmark:
            benchmark("{subject}", f"predict_{_model}")
        conda:
            "../envs/models.yaml"
        params:
            output_dir=lambda wc, output: str(Path(output.verdict).parents[1]),
            maps=lambda wc, _model=_model: model_map_paths(wc.subject, _model),
            config=config,
        script:
            "../scripts/predict_model.py"
