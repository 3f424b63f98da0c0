# Concentration, automatic AIF and the SVD maps of every configured method, in one job.


rule perfusion:
    input:
        previous=verdict("{subject}", "preprocess"),
    output:
        verdict=verdict("{subject}", "perfusion"),
    log:
        logfile("{subject}", "perfusion"),
    benchmark:
        benchmark("{subject}", "perfusion")
    conda:
        "../envs/perfusion.yaml"
    params:
        prefix=lambda wc: str(Path(OUT) / wc.subject / "perf" / wc.subject),
        config=config,
        mc=sp("{subject}", "mc_dsc"),
        json=sp("{subject}", "dsc_json"),
        mask=sp("{subject}", "brain_mask"),
        conc=sp("{subject}", "conc"),
        aif=sp("{subject}", "aif_tsv"),
        aif_mask=sp("{subject}", "aif_mask"),
        tissue_mask=sp("{subject}", "tissue_mask"),
        user_aif_mask=lambda wc: row(wc).get("aif_mask") or "",
        leakage_k2=sp("{subject}", "leakage_k2"),
    script:
        "../scripts/perfusion.py"
