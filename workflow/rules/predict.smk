if SHARDS == 1:

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
            gpu=gpus("predict"),
            mem_mb=scaled(2000, 2),
            runtime=scaled(10, 0.02),
        params:
            aggregation=config["predict"]["aggregation"],
            calibrate=config["predict"]["calibrate"],
            logit_adjustment=config["predict"]["logit_adjustment"],
            linear_weight=config["predict"]["linear_weight"],
            unassigned_below=config["predict"]["unassigned_below"],
        script:
            "../../scripts/predict.py"

else:

    rule shard_predict:
        """Cut the predict data into `predict.shards` contiguous shards (streamed)."""
        input:
            checked=ancient(CHECKED),
            source=source_h5ad("predict"),
        output:
            shards=[f"{R}/shards/predict_{k}.h5ad" for k in range(SHARDS)],
            offsets=f"{R}/shards/offsets.csv",
        log:
            log("shard_predict"),
        benchmark:
            bench("shard_predict")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled(1000, 2 / SHARDS),
            runtime=scaled(10, 0.02),
        params:
            use_raw=uses_raw("predict"),
        script:
            "../../scripts/shard_predict.py"

    rule predict_shard:
        """Predict the cells of one shard (GPU rule; shards run as parallel jobs)."""
        input:
            windows=f"{R}/contexts/predict_{{k}}.npz",
            h5ad=f"{R}/preprocessed/predict_{{k}}.h5ad",
            model=predict_model(),
        output:
            f"{R}/shards/predictions_{{k}}.csv",
        log:
            log("predict/{k}"),
        benchmark:
            bench("predict/{k}")
        wildcard_constraints:
            k=r"\d+",
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
            unassigned_below=config["predict"]["unassigned_below"],
        script:
            "../../scripts/predict.py"

    rule gather_predictions:
        """Join the shards' predictions in input order: the same table as unsharded."""
        input:
            [f"{R}/shards/predictions_{k}.csv" for k in range(SHARDS)],
        output:
            f"{R}/predictions.csv",
        log:
            log("gather_predictions"),
        benchmark:
            bench("gather_predictions")
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=scaled(1000, 3),
            runtime=scaled(10, 0.01),
        script:
            "../../scripts/gather_predictions.py"
