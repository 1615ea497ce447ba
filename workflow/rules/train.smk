rule train:
    """Train the classifier (GPU rule: resources.gpu from config, 0 = CPU)."""
    input:
        train=f"{R}/contexts/train.npz",
        val=f"{R}/contexts/val.npz",
        vocab=f"{R}/vocab",
    output:
        best_model=directory(f"{R}/model/best_model"),
        last_model=directory(f"{R}/model/last_model"),
        history=f"{R}/model/combined_epoch_results.csv",
    log:
        log("train"),
    benchmark:
        bench("train")
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        gpu=config["train"]["gpu"],
        mem_mb=8000,
    params:
        config=config,
    script:
        "../../scripts/train.py"
