rule preprocess_train:
    """Filter genes, fix the vocabulary gene order, normalise and bin the training cells."""
    input:
        checked=ancient(CHECKED),
        h5ad=source_h5ad("train"),
    output:
        f"{R}/preprocessed/train.h5ad",
    log:
        log("preprocess/train"),
    benchmark:
        bench("preprocess/train")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled(1000, 0.5),
        runtime=scaled(10, 0.05),
    params:
        settings=preprocess_settings("train"),
    script:
        "../../scripts/preprocess.py"


rule preprocess_aligned:
    """Align a val or predict file to the trained genes, then normalise and bin it."""
    input:
        checked=ancient(CHECKED),
        h5ad=lambda wc: source_h5ad(wc.split),
        vocab=lambda wc: vocab_for(wc.split),
    output:
        f"{R}/preprocessed/{{split}}.h5ad",
    log:
        log("preprocess/{split}"),
    benchmark:
        bench("preprocess/{split}")
    wildcard_constraints:
        split=r"val|predict|predict_\d+",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled(1000, 0.5),
        runtime=scaled(10, 0.05),
    params:
        settings=lambda wc: preprocess_settings(wc.split),
    script:
        "../../scripts/preprocess.py"
