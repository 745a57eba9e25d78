"""The run machinery: the stage registry and the one way a stage is executed
(:mod:`sptar.run.runner`), its log, sharding over processes, resumable chunks, and resource
guards (memory, disk).

May import: other base modules only (:mod:`sptar.io`, :mod:`sptar.config`, the top-level
modules). Never an engine or a stage (the runner finds stage modules by name).
"""
