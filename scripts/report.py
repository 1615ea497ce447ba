"""Rule report: the training summary PDF, its figures and the per-class validation table."""

from scgenai_flow.runtime import stage

with stage(snakemake.log[0]):
    from scgenai_flow.report import ReportOutputs, summary_from_files

    summary_from_files(
        history_csv=snakemake.input.history,
        model_dir=snakemake.input.model,
        validation_csv=snakemake.input.validation,
        run_info=snakemake.input.run_info,
        bench_dir=snakemake.params.bench_dir,
        loop=snakemake.params.loop,
        logit_adjustment=snakemake.params.logit_adjustment,
        linear_weight=snakemake.params.linear_weight,
        outputs=ReportOutputs(**snakemake.output),
    )
