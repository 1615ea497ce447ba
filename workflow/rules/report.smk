rule report:
    """Training summary PDF: settings, best epoch and per-epoch curves."""
    input:
        history=f"{R}/model/combined_epoch_results.csv",
        model=f"{R}/model/best_model",
    output:
        f"{R}/model/train_summary.pdf",
    log:
        log("report"),
    benchmark:
        bench("report")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../../scripts/report.py"
