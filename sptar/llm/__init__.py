"""The LLM engine: prompts, soft prompt tuning and scoring, and the CPU decoder that writes weak
queries (batched greedy/sampled decoding on a shared prefix cache).

May import: the base (:mod:`sptar.io`, :mod:`sptar.outputs`, :mod:`sptar.config`,
:mod:`sptar.run`, the top-level modules). Never a stage, never another engine.
"""
