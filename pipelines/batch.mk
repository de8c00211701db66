# A cohort through stochseg with make: one target per case, so `-j N` runs N cases at once and a
# re-run redoes only what changed.
#
#   make batch CASES=cohort OUT=results -j 4              (top-level Makefile: setup, build, this)
#   make -f pipelines/batch.mk CASES=cohort OUT=results   (`stochseg` on PATH, e.g. installed)
#   make -f PREFIX/share/stochseg/workflows/batch.mk ...  (the installed copy of this file)
#
# Cases are the subfolders of CASES (BraTS names <case>-t1n.nii.gz ..., or DICOM series). Case
# <c> gives the target OUT/<c>/report.yaml, which depends on every file under CASES/<c>/, on the
# model files and on the pipeline config file (as `stochseg validate` resolves them): touching one
# case's input re-runs that case only, touching a model or the config re-runs every case. Runs use --overwrite, and stochseg replaces
# a case folder atomically, so a re-run that fails leaves the previous result in place.
#
# A failing case does not stop the others (`-k` is not needed): its output is logged to
# OUT/.logs/<c>.log and a marker OUT/.logs/<c>.failed holds `exit_code: N` and `error: <line>`
# (removed when the case next succeeds). At the end the failures are listed, `stochseg summarize`
# writes OUT/cohort-summary.csv and .yaml, and make exits non-zero if any case failed. An
# interrupted run (exit 130) stops the batch.
#
# Variables: PIPELINE (a config file or a shipped pipeline's name; empty: stochseg's default
# pipeline, or only the models in ARGS), ARGS (config flags for both `run` and `validate`, e.g.
# --passes 2 --model onnx/unet-p32.onnx), THREADS (per case; default: the CPU quota, so with -j N
# set THREADS to cores / N), MODELS (files to depend on; default: the model files and config file
# `stochseg validate` reports), BIN (default: `stochseg` on PATH), LOG_FORMAT (text or json).
# Paths must not contain spaces.

SHELL := /bin/bash
BIN ?= stochseg
PIPELINE ?=
ARGS ?=
THREADS ?=
LOG_FORMAT ?= text

ifeq ($(strip $(CASES)),)
$(error give CASES=DIR (a folder of case folders))
endif
ifeq ($(strip $(OUT)),)
$(error give OUT=DIR (the folder for one output folder per case))
endif

CASES_DIR := $(patsubst %/,%,$(CASES))
OUT_DIR := $(patsubst %/,%,$(OUT))
LOGS := $(OUT_DIR)/.logs
CASE_NAMES := $(sort $(patsubst $(CASES_DIR)/%/,%,$(wildcard $(CASES_DIR)/*/)))
REPORTS := $(CASE_NAMES:%=$(OUT_DIR)/%/report.yaml)
CONFIG_ARGS := $(if $(strip $(PIPELINE)),--pipeline $(PIPELINE)) $(ARGS)
RUN_FLAGS := $(CONFIG_ARGS) $(if $(strip $(THREADS)),--threads $(THREADS))

ifeq ($(CASE_NAMES),)
$(error no case folder in $(CASES_DIR))
endif

# the model files and the config file the run uses, as `stochseg validate` resolves them (its
# `models[].path` and `pipeline_config`; this checks the config too)
ifeq ($(origin MODELS),undefined)
DEPENDS := $(shell set -o pipefail; $(BIN) -q validate $(CONFIG_ARGS) --format yaml \
  | sed -n -e 's/^    path: "\(.*\)"$$/\1/p' -e 's/^pipeline_config: "\(.*\)"$$/\1/p')
ifneq ($(.SHELLSTATUS),0)
$(error `$(BIN) validate $(CONFIG_ARGS)` failed: fix the pipeline config or models first)
endif
else
DEPENDS := $(MODELS) $(wildcard $(PIPELINE))
endif

.PHONY: all
all: $(REPORTS)
	@failed=0; ok=0; \
	for c in $(CASE_NAMES); do \
	  if [ -f $(LOGS)/$$c.failed ]; then \
	    failed=$$((failed + 1)); \
	    code=$$(sed -n 's/^exit_code: //p' $(LOGS)/$$c.failed); \
	    err=$$(sed -n 's/^error: //p' $(LOGS)/$$c.failed); \
	    echo "  FAILED $$c (exit $$code): $$err [log: $(LOGS)/$$c.log]" >&2; \
	  else ok=$$((ok + 1)); fi; \
	done; \
	echo "batch: $(words $(CASE_NAMES)) cases, $$ok ok, $$failed failed; results in $(OUT_DIR)" >&2; \
	$(BIN) -q summarize $(OUT_DIR) || exit $$?; \
	[ $$failed -eq 0 ]

.SECONDEXPANSION:
$(OUT_DIR)/%/report.yaml: $$(shell find $(CASES_DIR)/$$* -type f) $(DEPENDS)
	@mkdir -p $(LOGS)
	@rm -f $(LOGS)/$*.failed
	@code=0; \
	$(BIN) --log-format $(LOG_FORMAT) run $(RUN_FLAGS) --case $(CASES_DIR)/$* \
	  --out $(OUT_DIR)/$* --overwrite >$(LOGS)/$*.log 2>&1 || code=$$?; \
	if [ $$code -eq 0 ]; then \
	  echo "ok     $*"; \
	elif [ $$code -eq 130 ]; then \
	  echo "interrupted: $*" >&2; exit 130; \
	else \
	  err=$$(grep '^stochseg: error:' $(LOGS)/$*.log | tail -n 1); \
	  [ -n "$$err" ] || err=$$(tail -n 1 $(LOGS)/$*.log); \
	  printf 'exit_code: %s\nerror: %s\n' "$$code" "$$err" >$(LOGS)/$*.failed; \
	  echo "FAILED $* (exit $$code)"; \
	fi
