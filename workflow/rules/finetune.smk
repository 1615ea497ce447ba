if FINETUNE and FT["val"] is None:

    rule finetune_split:
        """Hold out a stratified fraction of the fine-tuning data for validation."""
        input:
            FT["train"],
        output:
            train=f"{F}/data/train.h5ad",
            val=f"{F}/data/val.h5ad",
        log:
            log("finetune/split"),
        benchmark:
            bench("finetune/split")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
        params:
            source=FT["train"],
            use_raw=FT["use_raw"],
            target_feature=DATA["target_feature"],
            fractions={"val": DATA["val_fraction"]},
            seed=config["seed"],
        script:
            "../../scripts/split_data.py"


rule finetune_vocabulary:
    """The pretrained vocabulary plus the new genes and labels of the fine-tuning data."""
    input:
        h5ad=finetune_source("train"),
        pretrained=pretrained_model(),
    output:
        directory(f"{F}/vocab"),
    log:
        log("finetune/vocabulary"),
    benchmark:
        bench("finetune/vocabulary")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        target_feature=DATA["target_feature"],
        min_cells=FT["min_cells"],
        seed=config["seed"],
        use_raw=FT["use_raw"] and FT["val"] is not None,
    script:
        "../../scripts/finetune_vocabulary.py"


rule finetune_preprocess:
    """Align fine-tuning data to the extended vocabulary, normalise and bin."""
    input:
        h5ad=lambda wc: finetune_source(wc.split),
        vocab=f"{F}/vocab",
    output:
        f"{F}/preprocessed/{{split}}.h5ad",
    log:
        log("finetune/preprocess/{split}"),
    benchmark:
        bench("finetune/preprocess/{split}")
    wildcard_constraints:
        split="train|val",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        settings={
            "num_bins": config["preprocess"]["num_bins"],
            "min_cells": 0,
            "seed": config["seed"],
            "use_raw": FT["use_raw"] and FT["val"] is not None,
            "chunk_cells": config["preprocess"]["chunk_cells"],
        },
    script:
        "../../scripts/preprocess.py"


rule finetune_contexts:
    """Windows of the fine-tuning data, with the pretrained model's context settings."""
    input:
        h5ad=f"{F}/preprocessed/{{split}}.h5ad",
        vocab=f"{F}/vocab",
        pretrained=pretrained_model(),
    output:
        f"{F}/contexts/{{split}}.npz",
    log:
        log("finetune/contexts/{split}"),
    benchmark:
        bench("finetune/contexts/{split}")
    wildcard_constraints:
        split="train|val",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        settings={},
        target_feature=DATA["target_feature"],
        labels_required=True,
    script:
        "../../scripts/contexts.py"


rule finetune:
    """Fine-tune the pretrained model (GPU rule: resources.gpu from config, 0 = CPU)."""
    input:
        train=f"{F}/contexts/train.npz",
        val=f"{F}/contexts/val.npz",
        vocab=f"{F}/vocab",
        pretrained=pretrained_model(),
    output:
        best_model=directory(f"{F}/best_model"),
        last_model=directory(f"{F}/last_model"),
        history=f"{F}/combined_epoch_results.csv",
    log:
        log("finetune/train"),
    benchmark:
        bench("finetune/train")
    conda:
        ENV
    threads: FT["threads"]
    resources:
        gpu=FT["gpu"],
        mem_mb=8000,
    params:
        config=config,
    script:
        "../../scripts/train.py"


rule finetune_report:
    """Fine-tuning summary PDF."""
    input:
        history=f"{F}/combined_epoch_results.csv",
        model=f"{F}/best_model",
    output:
        f"{F}/train_summary.pdf",
    log:
        log("finetune/report"),
    benchmark:
        bench("finetune/report")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../../scripts/report.py"
