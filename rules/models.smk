# Learned models: training data once per cohort, one training job per model (GPU nodes on a
# cluster: resources in profiles/default), one prediction job per subject and model. A
# model that cannot be trained on this cohort (no train subject with reference maps, no
# TOF-MRA, none of its maps in the references) leaves a `skipped` verdict, its predictions
# say so, and the study tables score every other method (bolus.learn.stages).


def training_rows():
    """The train/val rows (the columns the training data read); a subject whose perfusion
    stage did not succeed is left out when the data are written."""
    keep = ("participant_id", "split", "reference_dir")
    return [
        {k: ROWS[s].get(k) for k in keep}
        for s in SUBJECTS
        if ROWS[s]["split"] in ("train", "val")
    ]


def training_inputs(stage):
    def of(wildcards):
        rows = training_rows()
        found = [verdict(r["participant_id"], stage) for r in rows]
        for r in rows:
            found += subject_files(r["participant_id"], "reference_dir")
        return found

    return of


def model_layout(model):
    return MODEL_INFO[model].layout


# what the config check already knows, said before any job runs
if any(model_layout(m) == "tof" for m in MODELS) and not any(
    ROWS[s].get("tof_dicom_dir") or ROWS[s].get("tof_nifti") for s in SUBJECTS
):
    print(
        "bolus: no subject of participants.tsv has a TOF-MRA (tof_dicom_dir or tof_nifti): "
        + ", ".join(m for m in MODELS if model_layout(m) == "tof")
        + " will be skipped",
        file=sys.stderr,
    )


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
        voxels_per_subject=config["training"]["voxels_per_subject"],
        lesion_tmax_s=config["training"]["lesion_tmax_s"],
        seed=config["seed"],
        registration=config["reference_registration"],
        output_dir=OUT,
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
        model="|".join(MODELS) or "none",
    conda:
        "../envs/models.yaml"
    params:
        training=config["training"],
        model_params=lambda wc: config["model_params"].get(wc.model, {}),
        constants=config["constants"],
        seed=config["seed"],
    script:
        "../scripts/train_model.py"


def prediction_input(model):
    """What a model's prediction reads besides the model: the perfusion stage's outputs, or
    the coregistered TOF-MRA (pix2pix)."""
    return "tof" if model_layout(model) == "tof" else "perfusion"


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
            output_dir=OUT,
        script:
            "../scripts/predict_model.py"


def prediction_verdicts(subject):
    """The verdicts of every configured model's prediction for one subject."""
    return [verdict(subject, paths.predict_stage(m)) for m in MODELS]
