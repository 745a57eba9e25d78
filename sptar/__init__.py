"""sptar: soft prompt tuning for augmenting dense retrieval."""
__version__ = "0.1.0"
