# Learned models: training data once per cohort, one training job per model (GPU nodes on a
# cluster: resources in profiles/default), one prediction job per subject and model.


from bolus.models import model_maps  # noqa: E402

MODELS = list(config["models"])


def model_outputs(subject):
    """The maps every configured model predicts for one subject (see bolus.models.MODELS)."""
    return [
        str(paths.SubjectPaths(OUT, subject).map(m, name))
        for m in MODELS
        for name in model_maps(m)
    ]


def training_rows():
    """participants.tsv rows of the usable train/val subjects (after inspection)."""
    return [
        dict(PARTICIPANTS.loc[s].items())
        for s in usable_subjects()
        if PARTICIPANTS.loc[s, "split"] in ("train", "val")
    ]


def subject_inputs(subject):
    return [sp(subject, a) for a in ("conc", "aif_tsv", "brain_mask", "mc_dsc")]


rule training_data:
    input:
        lambda wc: [f for r in training_rows() for f in subject_inputs(r["participant_id"])],
    output:
        str(paths.training_data_dir(OUT) / "meta.json"),
    log:
        f"{OUT}/logs/models/training_data.log",
    conda:
        "../envs/models.yaml"
    params:
        rows=lambda wc: training_rows(),
        output_dir=OUT,
        config=config,
    script:
        "../scripts/training_data.py"


rule train_model:
    input:
        str(paths.training_data_dir(OUT) / "meta.json"),
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


for _model in MODELS:

    rule:
        name:
            f"predict_{_model}"
        input:
            model=str(paths.model_file(OUT, _model)),
            series=subject_inputs("{subject}"),
        output:
            [
                str(paths.SubjectPaths(OUT, "{subject}").map(_model, name))
                for name in model_maps(_model)
            ],
        log:
            logfile("{subject}", f"predict_{_model}"),
        benchmark:
            benchmark("{subject}", f"predict_{_model}")
        conda:
            "../envs/models.yaml"
        params:
            output_dir=OUT,
            config=config,
        script:
            "../scripts/predict_model.py"
