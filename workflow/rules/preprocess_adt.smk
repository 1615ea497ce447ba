rule preprocess_adt_train:
    """Bin the training cells' ADT (protein) values, rows matched to the RNA cells by barcode."""
    input:
        adt=adt_source("train") if MULTIOMICS else [],
        rna=f"{R}/preprocessed/train.h5ad",
    output:
        f"{R}/preprocessed/train_adt.h5ad",
    log:
        log("preprocess_adt/train"),
    benchmark:
        bench("preprocess_adt/train")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled(1000, 1),
        runtime=scaled(10, 0.02),
    params:
        settings=adt_settings(),
    script:
        "../../scripts/preprocess_adt.py"


rule preprocess_adt_aligned:
    """Bin a val or predict ADT file, aligned to the trained ADT features and the RNA cells."""
    input:
        adt=lambda wc: adt_source(wc.split),
        rna=f"{R}/preprocessed/{{split}}.h5ad",
        vocab=lambda wc: vocab_for(wc.split),
    output:
        f"{R}/preprocessed/{{split}}_adt.h5ad",
    log:
        log("preprocess_adt/{split}"),
    benchmark:
        bench("preprocess_adt/{split}")
    wildcard_constraints:
        split="val|predict",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled(1000, 1),
        runtime=scaled(10, 0.02),
    params:
        settings=adt_settings(),
    script:
        "../../scripts/preprocess_adt.py"
