if FINETUNE and FT["val"] is None:

    rule finetune_split:
        """Hold out a stratified fraction of the fine-tuning data for validation."""
        input:
            ancient(CHECKED),
            source=FT["train"],
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
            mem_mb=scaled(1000, 3),
            runtime=scaled(10, 0.02),
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
        **({"adt": FT["train_adt"]} if FT_MULTIOMICS else {}),
        checked=ancient(CHECKED),
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
        mem_mb=scaled(1000, 0.2),
        runtime=scaled(5, 0.01),
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
        mem_mb=scaled(1000, 0.5),
        runtime=scaled(10, 0.05),
    params:
        settings={
            "num_bins": config["preprocess"]["num_bins"],
            "binning": config["preprocess"]["binning"],
            "min_cells": 0,
            "seed": config["seed"],
            "use_raw": FT["use_raw"] and FT["val"] is not None,
        },
    script:
        "../../scripts/preprocess.py"


rule finetune_preprocess_adt:
    """Bin the fine-tuning cells' ADT values as the model does, new proteins included."""
    input:
        adt=lambda wc: finetune_adt_source(wc.split),
        rna=f"{F}/preprocessed/{{split}}.h5ad",
        vocab=f"{F}/vocab",
    output:
        f"{F}/preprocessed/{{split}}_adt.h5ad",
    log:
        log("finetune/preprocess_adt/{split}"),
    benchmark:
        bench("finetune/preprocess_adt/{split}")
    wildcard_constraints:
        split="train|val",
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


rule finetune_contexts:
    """Windows of the fine-tuning data, with the pretrained model's context settings."""
    input:
        unpack(lambda wc: finetune_adt_input(wc.split)),
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
        mem_mb=scaled(1000, 5),
        runtime=scaled(10, 0.05),
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
        # the linear member reads their normalised values
        train_h5ad=f"{F}/preprocessed/train.h5ad",
        val_h5ad=f"{F}/preprocessed/val.h5ad",
    output:
        best_model=directory(f"{F}/best_model"),
        last_model=directory(f"{F}/last_model"),
        history=f"{F}/combined_epoch_results.csv",
        run_info=f"{F}/run_info.yaml",
    log:
        log("finetune/train"),
    benchmark:
        bench("finetune/train")
    conda:
        ENV
    threads: FT["threads"]
    resources:
        gpu=gpus("finetune"),
        mem_mb=scaled(4000, 2),
        runtime=scaled(30, FT["num_epochs"] / 30),
    params:
        config=train_config("finetune"),
        # not an output: it must outlive a killed job so that the re-run resumes from it
        checkpoint=f"{F}/checkpoint.pt",
    script:
        "../../scripts/train.py"
