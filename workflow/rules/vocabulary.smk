rule vocabulary:
    """Gene, bin and label vocabularies, a Hugging Face tokenizer (offline), the context reference."""
    input:
        **context_reference(),
        **adt_input("train"),
        h5ad=f"{R}/preprocessed/train.h5ad",
    output:
        directory(f"{R}/vocab"),
    log:
        log("vocabulary"),
    benchmark:
        bench("vocabulary")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled(1000, 0.2),
        runtime=scaled(5, 0.01),
    params:
        target_feature=DATA["target_feature"],
        method=config["context"]["method"],
    script:
        "../../scripts/vocabulary.py"
