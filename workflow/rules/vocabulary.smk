rule vocabulary:
    """Gene, bin and label vocabularies and a Hugging Face tokenizer, built offline."""
    input:
        f"{R}/preprocessed/train.h5ad",
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
        mem_mb=2000,
    params:
        target_feature=DATA["target_feature"],
    script:
        "../../scripts/vocabulary.py"
