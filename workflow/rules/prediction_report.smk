rule prediction_report:
    """Predictions on the input cells as h5ad (with a UMAP), figures and metrics."""
    input:
        predictions=f"{R}/predictions.csv",
        source=source_h5ad("predict"),
    output:
        h5ad=f"{R}/predictions.h5ad",
        umap=report(
            f"{R}/prediction_umap.png",
            caption="../report/prediction_umap.rst",
            category="Prediction",
        ),
        metrics=report(
            f"{R}/prediction_metrics.csv",
            caption="../report/prediction_metrics.rst",
            category="Prediction",
        ),
        confusion=report(
            f"{R}/prediction_confusion.png",
            caption="../report/prediction_confusion.rst",
            category="Prediction",
        ),
    log:
        log("prediction_report"),
    benchmark:
        bench("prediction_report")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=scaled(2000, 4),
        runtime=scaled(10, 0.05),
    params:
        use_raw=uses_raw("predict"),
        target_feature=DATA["target_feature"],
        seed=config["seed"],
    script:
        "../../scripts/prediction_report.py"
