# scgenai-flow: train transformer cell classifiers and predict new cells.
# Stages: split_data -> preprocess -> vocabulary -> contexts -> train -> validate -> report
#         -> predict -> prediction_report


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/checks.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/preprocess_adt.smk"
include: "workflow/rules/vocabulary.smk"
include: "workflow/rules/contexts.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/prediction_report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
