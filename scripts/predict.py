"""Rule predict: one row per input cell with context_id, PredictedFeature, prediction_score."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.predict import predict_from_files
    from scgenai_flow.runtime import gpus_of

    predict_from_files(
        windows_npz=snakemake.input.windows,
        cells_h5ad=snakemake.input.h5ad,
        model_dir=snakemake.input.model,
        # how the job runs, read from the config (not params: changing them re-predicts nothing)
        batch_size=snakemake.config["predict"]["batch_size"],
        gpus=gpus_of(snakemake.config["predict"]["gpu"], snakemake.resources.gpu),
        threads=snakemake.threads,
        target=snakemake.output[0],
        aggregation=snakemake.params.aggregation,
        calibrate=snakemake.params.calibrate,
        logit_adjustment=snakemake.params.logit_adjustment,
        linear_weight=snakemake.params.linear_weight,
        unassigned_below=snakemake.params.unassigned_below,
    )
