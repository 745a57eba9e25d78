"""The project's one error type for problems a user can fix.

A :class:`SptarError` is printed by the CLI as one line (no traceback unless ``--debug``) and
ends the process with exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class SptarError(Exception):
    """A problem with the user's input, config or environment, with a message that says the fix."""

    exit_code = 2


def input_error(path: str | Path, message: str, *, line: int | None = None,
                fix: str | None = None) -> SptarError:
    """Build the one-line error for a bad input file: ``file:line: message (fix: ...)``."""
    where = f"{path}:{line}" if line is not None else str(path)
    text = f"{where}: {message}"
    if fix:
        text += f" (fix: {fix})"
    return SptarError(text)
