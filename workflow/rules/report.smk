rule validate:
    """Cell-level predictions of the best model on the validation cells, for the report."""
    input:
        windows=lambda wc: run_stage(wc, "contexts/val.npz"),
        h5ad=lambda wc: run_stage(wc, "preprocessed/val.h5ad"),
        model=f"{R}/{{run}}/best_model",
    output:
        f"{R}/{{run}}/validation_predictions.csv",
    log:
        log("{run}/validate"),
    benchmark:
        bench("{run}/validate")
    wildcard_constraints:
        run="model|finetune",
    conda:
        ENV
    threads: config["predict"]["threads"]
    resources:
        gpu=gpus("predict"),
        mem_mb=scaled(2000, 2),
        runtime=scaled(10, 0.02),
    params:
        aggregation=config["predict"]["aggregation"],
        calibrate=config["predict"]["calibrate"],
        logit_adjustment=config["predict"]["logit_adjustment"],
        linear_weight=config["predict"]["linear_weight"],
        unassigned_below=None,  # the report compares every validation cell's class
    script:
        "../../scripts/predict.py"


rule report:
    """Training summary PDF, plus its figures and per-class table for `snakemake --report`."""
    input:
        history=f"{R}/{{run}}/combined_epoch_results.csv",
        model=f"{R}/{{run}}/best_model",
        validation=f"{R}/{{run}}/validation_predictions.csv",
        run_info=f"{R}/{{run}}/run_info.yaml",
    output:
        pdf=report(
            f"{R}/{{run}}/train_summary.pdf",
            caption="../report/train_summary.rst",
            category="Training",
            subcategory="{run}",
        ),
        metrics=report(
            f"{R}/{{run}}/validation_metrics.csv",
            caption="../report/validation_metrics.rst",
            category="Training",
            subcategory="{run}",
        ),
        curves=report(
            f"{R}/{{run}}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="{run}",
        ),
        confusion=report(
            f"{R}/{{run}}/validation_confusion.png",
            caption="../report/validation_confusion.rst",
            category="Training",
            subcategory="{run}",
        ),
        scores=report(
            f"{R}/{{run}}/validation_scores.png",
            caption="../report/validation_scores.rst",
            category="Training",
            subcategory="{run}",
        ),
    log:
        log("{run}/report"),
    benchmark:
        bench("{run}/report")
    wildcard_constraints:
        run="model|finetune",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        bench_dir=lambda wc: f"{R}/benchmarks/{RUN_DIRS[wc.run]}",
        loop=lambda wc: "finetune" if wc.run == "finetune" else "train",
        logit_adjustment=config["predict"]["logit_adjustment"],
        linear_weight=config["predict"]["linear_weight"],
    script:
        "../../scripts/report.py"
