#!/usr/bin/env cwl-runner
# The cohort summary over case output folders (`stochseg summarize`).
cwlVersion: v1.2
class: CommandLineTool
label: stochseg summarize
baseCommand: [stochseg, -q, summarize, .]
requirements:
  InitialWorkDirRequirement:
    listing: $(inputs.case_outputs)
inputs:
  case_outputs:
    type: Directory[]
    doc: One output folder per case, as stochseg-run.cwl writes them.
outputs:
  csv: {type: File, outputBinding: {glob: cohort-summary.csv}}
  yaml: {type: File, outputBinding: {glob: cohort-summary.yaml}}
