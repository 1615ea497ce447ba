from scgenai_flow.checks import check_before_run, input_plan, plan_params

# Cheap checks first: missing inputs or model dirs and an unwritable results dir fail here, before any job; check_inputs reads the files' headers before any stage
# reads their data. The stages take its marker as `ancient`, so re-checking re-runs none of them;
# it is a checkpoint because Snakemake decides the rest of the DAG before running a rule, and
# would then miss the stages that a changed config re-runs (changed params or input files)
# downstream of an ancient input whose rule re-runs (snakemake/snakemake#4166): after a
# checkpoint it decides again.
CHECKS = input_plan(config, trains_here=not EXTERNAL_ONLY)
check_before_run(CHECKS, config)
CHECKED = f"{R}/checks/inputs.ok"


checkpoint check_inputs:
    """Check the input files' headers, labels and genes, reference files and model dirs."""
    input:
        CHECKS.paths(),
    output:
        CHECKED,
    log:
        log("check_inputs"),
    benchmark:
        bench("check_inputs")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
    params:
        plan=plan_params(CHECKS),
    script:
        "../../scripts/check_inputs.py"
