#!/usr/bin/env cwl-runner
# One case through stochseg: `cwltool --no-container pipelines/cwl/stochseg-run.cwl
# --case_dir cohort/CASE --passes 2`. `stochseg` must be on PATH (installed with `make install`,
# or in the container of a DockerRequirement you add); an installed stochseg finds ONNX Runtime
# and its shipped pipelines in its own tree, so nothing else is needed (docs/install.md). A
# binary run from a checkout finds the library as docs/models.md says (the ort_lib input, or
# ORT_DYLIB_PATH kept with --preserve-environment).
# Pipeline: none given, stochseg's default pipeline; `pipeline_name` a shipped pipeline (its models
# come with the installation); `pipeline` a config File. A config File names its models relative
# to itself, and CWL stages each File on its own, so give them as `models` (they replace the
# config's) unless the config holds absolute paths. The output is the case folder, named after the
# case folder.
cwlVersion: v1.2
class: CommandLineTool
label: stochseg run (one case)
doc: Uncertainty-aware brain-tumor segmentation of one case with a stochastic ONNX U-Net ensemble.

baseCommand: [stochseg]
arguments:
  - {prefix: --log-format, valueFrom: json, position: 0}
  - {valueFrom: run, position: 1}
  - {prefix: --out, valueFrom: $(inputs.case_dir.basename), position: 10}

requirements:
  ResourceRequirement:
    coresMin: $(inputs.threads)
    ramMin: $(inputs.ram_mib)
  NetworkAccess:
    networkAccess: false

inputs:
  case_dir:
    type: Directory
    doc: Case folder (BraTS names <case>-t1n.nii.gz, -t1c, -t2w, -t2f; or DICOM series).
    inputBinding: {prefix: --case, position: 2}
  pipeline:
    type: File?
    doc: Pipeline config (YAML).
    inputBinding: {prefix: --pipeline, position: 2}
  pipeline_name:
    type: string?
    doc: A shipped pipeline by name (`stochseg pipelines`), instead of a pipeline File.
    inputBinding: {prefix: --pipeline, position: 2}
  models:
    type:
      - "null"
      - type: array
        items: File
        inputBinding: {prefix: --model}
    doc: ONNX models, replacing the config's.
    inputBinding: {position: 3}
  passes: {type: int?, inputBinding: {prefix: --passes, position: 4}}
  sigma: {type: float?, inputBinding: {prefix: --sigma, position: 4}}
  seed: {type: int?, inputBinding: {prefix: --seed, position: 4}}
  threshold: {type: float?, inputBinding: {prefix: --threshold, position: 4}}
  deterministic: {type: boolean?, inputBinding: {prefix: --deterministic, position: 4}}
  device:
    type: string?
    doc: cpu, cuda[:N] or tensorrt[:N].
    inputBinding: {prefix: --device, position: 4}
  ort_lib:
    type: string?
    doc: Path of libonnxruntime.so.* on the machine that runs the step (not staged).
    inputBinding: {prefix: --ort-lib, position: 4}
  threads:
    type: int
    default: 1
    inputBinding: {prefix: --threads, position: 4}
  ram_mib:
    type: int
    default: 4096
    doc: Memory to request; size it with `stochseg validate --case DIR` (expected peak memory).

outputs:
  case_out:
    type: Directory
    doc: The case's output folder (report.yaml, report.json, NIfTI maps, seg.dcm).
    outputBinding: {glob: $(inputs.case_dir.basename)}
  report:
    type: File
    outputBinding: {glob: $(inputs.case_dir.basename)/report.yaml}
  log:
    type: stderr

stderr: $(inputs.case_dir.basename).log
