"""The base of every config section (frozen, unknown keys are errors) and shared field types."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

# Where a model computes in: "auto" is bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16,
# AMX), fp32 elsewhere (sptar.models.effective_precision).
Precision = Literal["auto", "fp32", "bf16"]


class Section(BaseModel):
    """A config section: frozen once loaded, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    # Fields added after stages had been run with this section: at this value a field is left
    # out of the section's hash, so stages finished before it existed stay up to date.
    HASH_NEUTRAL: ClassVar[dict[str, Any]] = {}

    def hash_dump(self) -> dict[str, Any]:
        """The section as its stages' config hash sees it (see ``HASH_NEUTRAL``)."""
        dump = self.model_dump(mode="json")
        for key, neutral in self.HASH_NEUTRAL.items():
            if key in dump and dump[key] == neutral:
                del dump[key]
        return dump


def _relative(value: str | None, what: str) -> str | None:
    if value is not None and PurePath(value).is_absolute():
        raise ValueError(f"{what} must be relative to the project folder, got absolute {value!r}")
    return value
