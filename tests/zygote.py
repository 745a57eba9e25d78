"""Test helper: run ``sptar`` commands in fresh processes, and kill them (SIGKILL) on purpose.

Importing torch, transformers, peft and sentence-transformers takes ~10 s of CPU here, too
much to pay for every killed process. So one server process (the "zygote") imports them once,
does no torch work at all, and then forks a child for every command: each child runs
``sptar.cli.main(argv)``, exactly what ``python -m sptar`` runs, in its own process. A child can
be killed

- at a write: right before or right after its n-th ``os.replace`` (every atomic write and the
  manifest end with one), the child sends itself SIGKILL; or
- at a time: the server sends SIGKILL ``delay`` seconds after the child entered
  ``sptar.run.runner.execute`` (a real kill from outside, at no particular point).

The server blocks the network for itself and its children (with ``HF_HUB_OFFLINE`` unset) and
logs every attempt, so the tests also show that a run with the default config needs none.
Nothing here is used by the package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVER = r'''
import json, os, select, signal, socket, sys, threading, time

NETWORK_LOG = os.environ["ZYGOTE_NETWORK_LOG"]


def _blocked(*args, **kwargs):
    with open(NETWORK_LOG, "a") as log:
        log.write(f"{os.getpid()} {args[:2]!r}\n")
    raise OSError("network access blocked by the test")


socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.create_connection = _blocked
socket.getaddrinfo = _blocked

import torch
torch.set_num_threads(1)
import peft, sentence_transformers, transformers  # noqa: E401,F401  the expensive imports
import sentence_transformers.sentence_transformer.losses  # noqa: F401
import sptar.cli, sptar.run.runner  # noqa: E401

answers = sys.stdout
sys.stdout = sys.stderr
answers.write(json.dumps({"ready": True, "threads": threading.active_count()}) + "\n")
answers.flush()


def child(job, pipe):
    os.dup2(2, 1)  # fd 1 is the answers pipe: nothing of the child's may land there
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    replaces = [0]
    kill = job.get("kill")
    real_replace = os.replace

    def replace(src, dst, **kwargs):
        replaces[0] += 1
        if kill and replaces[0] == kill["replace"] and kill["when"] == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, **kwargs)
        if kill and replaces[0] == kill["replace"] and kill["when"] == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    execute = sptar.run.runner.execute

    def announced(*args, **kwargs):
        os.write(pipe, b"s")
        return execute(*args, **kwargs)

    sptar.run.runner.execute = announced
    try:
        code = sptar.cli.main(job["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    os.write(pipe, f"n{replaces[0]}".encode())
    sys.stderr.flush()
    os._exit(code)


def supervise(pid, pipe, job):
    delay, started, killed, data = job.get("delay"), None, False, b""
    deadline = time.time() + job.get("timeout", 300)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        ready, _, _ = select.select([pipe], [], [], 0.005)
        if ready:
            chunk = os.read(pipe, 64)
            data += chunk
            if started is None and chunk.startswith(b"s"):
                started = time.time()
        now = time.time()
        if not killed and (now > deadline or (delay is not None and started is not None
                                              and now >= started + delay)):
            os.kill(pid, signal.SIGKILL)
            killed = True
    while True:
        chunk = os.read(pipe, 64)
        if not chunk:
            break
        data += chunk
    os.close(pipe)
    text = data.decode()
    return {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "replaces": int(text.split("n", 1)[1]) if "n" in text else None,
            "seconds": None if started is None else round(time.time() - started, 3)}


for line in sys.stdin:
    job = json.loads(line)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        child(job, write_end)
    os.close(write_end)
    answers.write(json.dumps(supervise(pid, read_end, job)) + "\n")
    answers.flush()
'''


@dataclass
class Outcome:
    """How a child ended: killed by ``signal``, or exited with ``code``."""

    signal: int | None
    code: int | None
    replaces: int | None  # os.replace calls it made (None when killed)
    seconds: float | None  # from entering execute() to the end

    @property
    def killed(self) -> bool:
        return self.signal == 9


class Zygote:
    """The server process; :meth:`run` forks one child per command and waits for it."""

    def __init__(self, root: Path, cwd: Path):
        self.cwd = cwd
        self.log = root / "zygote.log"
        self.network_log = root / "network.log"
        self.network_log.write_text("")
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(ZYGOTE_NETWORK_LOG=str(self.network_log), OMP_NUM_THREADS="1")
        self._stderr = self.log.open("w")
        self.process = subprocess.Popen([sys.executable, "-c", SERVER], cwd=cwd, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._stderr, text=True)
        self.ready: dict[str, Any] | None = None

    def _answer(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died; its log:\n{self.tail()}")
        return json.loads(line)

    def run(self, argv: list[str], env: dict[str, str], *, kill: dict | None = None,
            delay: float | None = None) -> Outcome:
        if self.ready is None:
            self.ready = self._answer()
        job = {"argv": argv, "env": env, "cwd": str(self.cwd), "kill": kill, "delay": delay}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return Outcome(**self._answer())

    def tail(self, lines: int = 40) -> str:
        self._stderr.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def network_attempts(self) -> list[str]:
        return self.network_log.read_text().splitlines()

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stderr.close()
