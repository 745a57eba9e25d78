"""On-disk formats and files: one reader and one writer per format (:mod:`sptar.io.formats`),
atomic writes, ``manifest.json``, where everything lives (:mod:`sptar.io.paths`), and the
readers of a user's own corpus. The typed stage outputs built on these are in
:mod:`sptar.outputs`.

May import: other base modules only (:mod:`sptar.config`, the top-level ``errors`` and
``text``). Never an engine or a stage.
"""
