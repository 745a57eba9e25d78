"""The retrieval engine: BM25, dense encoding (torch or OpenVINO int8) and FAISS search, the
bi-encoder trainer and its training set, and the weak-data filters built on them.

May import: the base (:mod:`sptar.io`, :mod:`sptar.outputs`, :mod:`sptar.config`,
:mod:`sptar.run`, the top-level modules). Never a stage, never another engine.
"""
