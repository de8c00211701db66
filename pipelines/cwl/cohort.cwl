#!/usr/bin/env cwl-runner
# A cohort: stochseg-run.cwl scattered over the case folders, then the cohort summary.
#   cwltool --no-container pipelines/cwl/cohort.cwl job.yaml
# with job.yaml listing `cases` (Directory entries) and, e.g., `passes`, `pipeline_name` or
# `models`; `stochseg` installed on PATH (see stochseg-run.cwl for a binary in a checkout).
cwlVersion: v1.2
class: Workflow
label: stochseg over a cohort
requirements:
  ScatterFeatureRequirement: {}

inputs:
  cases: Directory[]
  pipeline: File?
  pipeline_name: string?
  models: File[]?
  passes: int?
  sigma: float?
  seed: int?
  threshold: float?
  deterministic: boolean?
  device: string?
  ort_lib: string?
  threads: {type: int, default: 1}
  ram_mib: {type: int, default: 4096}

outputs:
  case_outputs: {type: "Directory[]", outputSource: segment/case_out}
  reports: {type: "File[]", outputSource: segment/report}
  logs: {type: "File[]", outputSource: segment/log}
  summary_csv: {type: File, outputSource: summarize/csv}
  summary_yaml: {type: File, outputSource: summarize/yaml}

steps:
  segment:
    run: stochseg-run.cwl
    scatter: case_dir
    in:
      case_dir: cases
      pipeline: pipeline
      pipeline_name: pipeline_name
      models: models
      passes: passes
      sigma: sigma
      seed: seed
      threshold: threshold
      deterministic: deterministic
      device: device
      ort_lib: ort_lib
      threads: threads
      ram_mib: ram_mib
    out: [case_out, report, log]
  summarize:
    run: stochseg-summarize.cwl
    in:
      case_outputs: segment/case_out
    out: [csv, yaml]
