"""A report, as ``report/`` (one run) and ``<experiment>-seeds-<s>/`` (the report over seeds)
write it: ``report.json`` (every figure), ``report.md`` (the tables a person reads) and, for one
run, the chart ``metrics.png`` that the markdown links to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sptar.io.atomic import atomic_write
from sptar.io.formats import read_json, write_json

REPORT_JSON, REPORT_MD, CHART = "report.json", "report.md", "metrics.png"


def write_report(folder: Path, report: dict[str, Any], markdown: str) -> None:
    """The JSON first, then the markdown: a reader who finds ``report.md`` finds both."""
    write_json(folder / REPORT_JSON, report)
    with atomic_write(folder / REPORT_MD) as handle:
        handle.write(markdown)


def read_report(folder: Path) -> dict[str, Any]:
    return read_json(folder / REPORT_JSON)


def report_markdown(folder: Path) -> str:
    return (folder / REPORT_MD).read_text(encoding="utf-8")
