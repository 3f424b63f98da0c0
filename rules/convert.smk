# DICOM folder (or user NIfTI) → 4D NIfTI + de-identified JSON sidecar.


checkpoint inspect:
    output:
        inspection("{subject}"),
    log:
        logfile("{subject}", "inspect"),
    benchmark:
        benchmark("{subject}", "inspect")
    conda:
        "../envs/convert.yaml"
    params:
        row=row,
        series=config["dicom"]["series"],
    script:
        "../scripts/inspect.py"


rule convert:
    input:
        inspection("{subject}"),
    output:
        nifti=sp("{subject}", "dsc"),
        json=sp("{subject}", "dsc_json"),
    log:
        logfile("{subject}", "convert"),
    benchmark:
        benchmark("{subject}", "convert")
    conda:
        "../envs/convert.yaml"
    params:
        row=row,
        series=config["dicom"]["series"],
    script:
        "../scripts/convert.py"
