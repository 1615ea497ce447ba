rule predict:
    """Predict every cell of the predict data (GPU rule: resources.gpu from config)."""
    input:
        windows=f"{R}/contexts/predict.npz",
        h5ad=f"{R}/preprocessed/predict.h5ad",
        model=predict_model(),
    output:
        f"{R}/predictions.csv",
    log:
        log("predict"),
    benchmark:
        bench("predict")
    conda:
        ENV
    threads: config["predict"]["threads"]
    resources:
        gpu=config["predict"]["gpu"],
        mem_mb=4000,
    params:
        batch_size=config["predict"]["batch_size"],
    script:
        "../../scripts/predict.py"
