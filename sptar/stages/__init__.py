"""The stages: one module per pipeline step (data, split, tune, generate, filter, export, train,
evaluate, report) plus ``repeats``, the report over seeds. Each is a thin driver with
``sections``, ``output_dir``, ``upstream`` and ``run(cfg, paths, **options)`` (see
:mod:`sptar.run.runner`): it reads earlier stages' outputs through :mod:`sptar.outputs`, does its
work with the engines, and writes its own folder.

May import: the engines (:mod:`sptar.llm`, :mod:`sptar.retrieval`, :mod:`sptar.reporting`) and
the base (:mod:`sptar.io`, :mod:`sptar.outputs`, :mod:`sptar.config`, :mod:`sptar.run`, the
top-level modules). Never another stage: stages meet through their files.
"""
