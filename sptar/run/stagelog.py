"""What a stage shows while it runs: its whole log in ``log.txt``, and on the terminal either
everything (the default) or short status lines (``SPTAR_CONSOLE=status``, which ``make all``
sets so that two stages side by side stay readable).

- :func:`setup_console` (the CLI) installs the terminal's handler. ``full``: every log record
  (INFO and up, WARNING and up with ``--quiet``) and tqdm's bars, as always. ``status``: one
  complete line per event, prefixed with the stage label: started, done, skipped, warnings, and
  the progress of each tqdm bar at most every ``SPTAR_PROGRESS_SECONDS`` (default 15), e.g.
  ``[tune] prompt tuning 12/30 steps (40%), loss=2.810, 1:05 elapsed, ~1:37 left``. Each line is
  one ``write`` on the terminal, so the lines of two processes never mix. The CLI's error line
  (``sptar: error: ...``) is unchanged.
- :func:`stage_log` (around every stage run, :func:`sptar.run.runner.execute`) writes everything the
  stage logs at INFO and up (whatever ``--quiet`` says) and the same progress lines to
  ``<stage folder>/log.txt`` (``log-shard<I>.txt`` for shard I > 0), from scratch on every run.
  In ``status`` mode the process's own stdout and stderr go there as well (library prints,
  Python warnings, native messages): the terminal gets the status lines only.

``log.txt`` is no output of the stage: the manifest's output digest leaves it out
(:func:`sptar.io.manifest.is_log`). A stage that replaces its whole folder (``atomic_dir``) gets
its log put back afterwards; a run that fails before writing anything leaves nothing behind,
not even the log or the folders made for it (its error is on the terminal).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sptar.errors import SptarError
from sptar.io.manifest import LOG

CONSOLE_ENV = "SPTAR_CONSOLE"
INTERVAL_ENV = "SPTAR_PROGRESS_SECONDS"
MODES = ("full", "status")
DEFAULT_INTERVAL = 15.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
NOISY = ("httpx", "urllib3", "huggingface_hub", "sentence_transformers", "faiss")

progress_log = logging.getLogger("sptar.progress")

_console: logging.Handler | None = None  # the terminal handler setup_console installed


# ---------------------------------------------------------------- the terminal


def console_mode() -> str:
    """``full`` or ``status`` (``$SPTAR_CONSOLE``; anything else counts as ``full``)."""
    mode = os.environ.get(CONSOLE_ENV, "").strip().lower()
    return mode if mode in MODES else "full"


def progress_interval() -> float:
    """Seconds between two progress lines of one bar (``$SPTAR_PROGRESS_SECONDS``)."""
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def status_line(record: logging.LogRecord, label: str) -> str | None:
    """The terminal line of ``record`` in status mode, or None: a record with a ``status``
    text (start, end, progress) shows that text, a warning or error its first line."""
    status = getattr(record, "status", None)
    if status is None:
        if record.levelno < logging.WARNING:
            return None
        first, _, rest = record.getMessage().strip().partition("\n")
        status = f"{record.levelname.lower()}: {first}" + (" [more in the log]" if rest.strip() else "")
    return f"[{label}] {status}"


class StatusHandler(logging.Handler):
    """The terminal in status mode: :func:`status_line` of each record, one ``os.write`` each on
    a copy of the stderr the process started with (a stage's own stderr goes to its log)."""

    def __init__(self, fd: int, label: str = "sptar") -> None:
        super().__init__()
        self.fd = fd
        self.label = label

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = status_line(record, self.label)
            if line is not None:
                os.write(self.fd, (line + "\n").encode("utf-8", "replace"))
        except Exception:  # pragma: no cover - logging's own policy for a broken handler
            self.handleError(record)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        super().close()


def _not_progress(record: logging.LogRecord) -> bool:
    return not getattr(record, "progress", False)  # the bar itself is on the terminal


def setup_console(quiet: bool) -> None:
    """Log to the terminal in the mode of ``$SPTAR_CONSOLE``. The root logger passes INFO
    (for ``log.txt``); the terminal handler shows WARNING and up with ``quiet``. A root logger
    that already has handlers (set up by the caller, e.g. pytest) is left as it is."""
    global _console
    root = logging.getLogger()
    if _console is not None:  # a second call in one process replaces the first
        root.removeHandler(_console)
        _console.close()
        _console = None
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if root.handlers:
        return
    if console_mode() == "status":
        handler: logging.Handler = StatusHandler(os.dup(sys.stderr.fileno()))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        handler.addFilter(_not_progress)
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _console = handler


def set_label(label: str) -> None:
    """The prefix of the status lines from now on (the stage this process runs)."""
    if isinstance(_console, StatusHandler):
        _console.label = label


def _status_console() -> bool:
    return isinstance(_console, StatusHandler)


# ---------------------------------------------------------------- progress lines


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _plural(unit: str) -> str:
    if unit == "it" or unit.endswith("s"):
        return unit
    return unit[:-1] + "ies" if unit.endswith("y") and unit[-2:-1] not in "aeiou" else unit + "s"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def progress_text(desc: str | None, n: float, total: float | None, unit: str | None,
                  postfix: str | None, elapsed: float, final: bool = False) -> str:
    """``prompt tuning 12/30 steps (40%), loss=2.810, 1:05 elapsed, ~1:37 left``; a bar's last
    line ends with ``took 2:41`` instead of the times."""
    count = f"{_number(n)}/{_number(total)}" if total else _number(n)
    parts = [f"{(desc or '').rstrip(': ') or 'progress'} {count} {_plural(unit or 'it')}"
             + (f" ({100 * n / total:.0f}%)" if total else "")]
    if postfix:
        parts.append(str(postfix))
    if final:
        parts.append(f"took {_clock(elapsed)}")
    else:
        parts.append(f"{_clock(elapsed)} elapsed")
        if total and 0 < n < total:
            parts.append(f"~{_clock(elapsed * (total - n) / n)} left")
    return ", ".join(parts)


class _NoBar:
    """Where a hidden bar draws itself: nowhere."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def _report(bar, clock: Callable[[], float], interval: float, final: bool = False) -> None:
    """Log ``bar``'s progress if ``interval`` seconds passed since its last line (or it ends).
    A bar that ends before it was ever reported gets its last line in the log only."""
    if not hasattr(bar, "_sptar_started") or getattr(bar, "_sptar_closed", False):
        return
    elapsed = clock() - bar._sptar_started
    if not final and (elapsed < bar._sptar_due or bar.total and bar.n >= bar.total):
        return  # not due yet, or complete: its closing line follows
    bar._sptar_due = elapsed + interval
    shown = not final or bar._sptar_shown or elapsed >= interval
    bar._sptar_shown = True
    text = progress_text(bar.desc, bar.n, bar.total, bar.unit, bar.postfix, elapsed, final)
    progress_log.info("%s", text, extra={"progress": True, "status": text if shown else None})


@contextlib.contextmanager
def progress_lines(interval: float, hide_bars: bool,
                   clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """While inside, every tqdm bar (``tqdm.auto`` and the trainer's included: they subclass
    ``tqdm.std.tqdm``) logs a progress line to ``sptar.progress`` at most every ``interval``
    seconds and one when it closes; ``hide_bars`` stops the bars drawing themselves."""
    from tqdm import std

    cls = std.tqdm
    names = ("__init__", "display", "close")
    saved = {name: cls.__dict__[name] for name in names}  # tqdm's __init__ is a partialmethod
    original = {name: getattr(cls, name) for name in names}

    def __init__(self, *args, **kwargs):
        if hide_bars and len(args) < 5:  # file is tqdm's fifth parameter
            kwargs["file"] = _NoBar()
        original["__init__"](self, *args, **kwargs)
        self._sptar_started, self._sptar_due, self._sptar_shown = clock(), interval, False

    def display(self, msg=None, pos=None):
        shown = original["display"](self, msg, pos)
        _report(self, clock, interval)
        return shown

    def close(self):
        if not getattr(self, "disable", True):
            _report(self, clock, interval, final=True)
            self._sptar_closed = True
        original["close"](self)

    for name, function in (("__init__", __init__), ("display", display), ("close", close)):
        setattr(cls, name, function)
    try:
        yield
    finally:
        for name, attribute in saved.items():
            setattr(cls, name, attribute)


# ---------------------------------------------------------------- the stage's log file


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _same_file(path: Path, fd: int) -> bool:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (mine.st_dev, mine.st_ino)


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _log_failure(handler: logging.Handler, exc: BaseException) -> None:
    """The end of a failed run, in the log file only (the CLI prints the error line)."""
    if isinstance(exc, SptarError):
        message, exc_info = f"error: {exc}", None
    elif isinstance(exc, KeyboardInterrupt):
        message, exc_info = "interrupted", None
    else:
        message, exc_info = "failed with an unexpected error", (type(exc), exc, exc.__traceback__)
    handler.handle(logging.LogRecord("sptar.run.runner", logging.ERROR, __file__, 0, message, None,
                                     exc_info))


class _Redirect:
    """Point the process's stdout and stderr (fds 1 and 2) at ``fd`` until :meth:`restore`."""

    def __init__(self, fd: int) -> None:
        _flush_std()
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(fd, 1)
        os.dup2(fd, 2)

    def restore(self) -> None:
        _flush_std()
        for target, saved in zip((1, 2), self.saved, strict=True):
            os.dup2(saved, target)
            os.close(saved)


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def stage_log(folder: str | Path, name: str = LOG) -> Iterator[Path]:
    """Write the stage's log to ``folder/name`` while inside (see the module docstring);
    yield its path."""
    path = Path(folder) / name
    created = _missing_folders(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
    stream = open(os.dup(fd), "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    status = _status_console()
    redirect = _Redirect(fd) if status else None
    try:
        with progress_lines(progress_interval(), hide_bars=status):
            yield path
    except BaseException as exc:
        _log_failure(handler, exc)
        raise
    finally:
        if redirect is not None:
            redirect.restore()
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        stream.close()
        try:
            _settle(path, fd, created)
        finally:
            os.close(fd)


def _settle(path: Path, fd: int, created: list[Path]) -> None:
    """A run that wrote nothing but its log into a folder made for it leaves nothing; a log
    whose folder the stage replaced (``atomic_dir``) is put back into the new one."""
    folder = path.parent
    if created and folder.is_dir() and [p.name for p in folder.iterdir()] == [path.name] \
            and _same_file(path, fd):
        path.unlink()
        for made in created:
            try:
                made.rmdir()
            except OSError:  # not empty: another process writes there now
                break
        return
    if folder.is_dir() and not _same_file(path, fd):  # written in place: the manifest stays
        path.write_bytes(_read_all(fd))  # the stage's last os.replace (tests kill around each)
