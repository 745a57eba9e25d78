"""Measuring and reporting: retrieval metrics, paired significance tests, markdown tables, plots,
and what a finished run's manifests say (:mod:`sptar.reporting.runfacts`).

May import: the base (:mod:`sptar.io`, :mod:`sptar.outputs`, :mod:`sptar.config`,
:mod:`sptar.run`, the top-level modules). Never a stage, never another engine.
"""
