# Learned models: training data once per cohort, one training job per model (GPU nodes on a
# cluster: resources in profiles/default), one prediction job per subject and model. A
# model that cannot be trained on this cohort (no train subject with reference maps, no
# TOF-MRA, none of its maps in the references) leaves a `skipped` verdict, its predictions
# say so, and the study tables score every other method (bolus.learn.stages). A model whose
# training.source resolves to `pretrained` has no training job: its shipped weights are
# the model (rule pretrained_model).


rule training_data:
    input:
        training_inputs("perfusion"),
    output:
        str(paths.training_meta(OUT, "voxels")),
    log:
        logfile("models", "training_data"),
    conda:
        "../envs/models.yaml"
    params:
        rows=lambda wc: training_rows(),
        grid=training_grid(),
        voxels_per_subject=config["training"]["voxels_per_subject"],
        lesion_tmax_s=config["training"]["lesion_tmax_s"],
        seed=config["seed"],
        registration=config["reference_registration"],
    script:
        "../scripts/training_data.py"


rule train_model:
    input:
        lambda wc: str(paths.training_meta(OUT, model_layout(wc.model))),
    output:
        str(paths.model_verdict(OUT, "{model}")),
    log:
        logfile("models", "{model}"),
    benchmark:
        benchmark("models", "{model}")
    wildcard_constraints:
        model="|".join(TRAINED) or "none",
    conda:
        "../envs/models.yaml"
    params:
        training=config["training"],
        model_params=lambda wc: config["model_params"].get(wc.model, {}),
        constants=config["constants"],
        seed=config["seed"],
        finetune=lambda wc: SOURCES[wc.model] == "finetune",
        weights=lambda wc: shipped_checksum(wc.model, SOURCES[wc.model] == "finetune"),
    script:
        "../scripts/train_model.py"


# training.source pretrained: the shipped weights (bolus.weights) are the model, no training
rule pretrained_model:
    output:
        str(paths.model_verdict(OUT, "{model}")),
    log:
        logfile("models", "{model}"),
    wildcard_constraints:
        model="|".join(PRETRAINED) or "none",
    localrule: True
    conda:
        "../envs/models.yaml"
    params:
        weights=lambda wc: shipped_checksum(wc.model),
    script:
        "../scripts/pretrained_model.py"


for _model in MODELS:

    rule:
        name:
            paths.predict_stage(_model)
        input:
            previous=verdict("{subject}", prediction_input(_model)),
            model=str(paths.model_verdict(OUT, _model)),
        output:
            verdict=verdict("{subject}", paths.predict_stage(_model)),
        log:
            logfile("{subject}", paths.predict_stage(_model)),
        benchmark:
            benchmark("{subject}", paths.predict_stage(_model))
        conda:
            "../envs/models.yaml"
        params:
            model=_model,
            device=config["training"]["device"],
        script:
            "../scripts/predict_model.py"
