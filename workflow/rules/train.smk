rule train:
    """Train the classifier (GPU rule: resources.gpu from config, 0 = CPU)."""
    input:
        train=f"{R}/contexts/train.npz",
        val=f"{R}/contexts/val.npz",
        vocab=f"{R}/vocab",
        # the linear member reads their normalised values
        train_h5ad=f"{R}/preprocessed/train.h5ad",
        val_h5ad=f"{R}/preprocessed/val.h5ad",
    output:
        best_model=directory(f"{R}/model/best_model"),
        last_model=directory(f"{R}/model/last_model"),
        history=f"{R}/model/combined_epoch_results.csv",
        run_info=f"{R}/model/run_info.yaml",
    log:
        log("train"),
    benchmark:
        bench("train")
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        gpu=gpus("train"),
        mem_mb=scaled(4000, 2),
        runtime=scaled(30, config["train"]["num_epochs"] / 30),
    params:
        config=train_config(),
        # not an output: it must outlive a killed job so that the re-run resumes from it
        checkpoint=f"{R}/model/checkpoint.pt",
    script:
        "../../scripts/train.py"
