"""Resumable, shardable work in numbered chunks, shared by generation and corpus encoding.

The work is cut into ``count`` chunks; chunk ``c`` belongs to shard ``c % num_shards``. Each chunk
is written atomically to its own file when it is done, so a killed run redoes only the chunks
that are missing and shards share nothing but the folder. Whoever finds every chunk present
while holding the folder's lock (the last shard to finish, or any later run) merges them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sptar.io.atomic import file_lock


@dataclass(frozen=True)
class Chunks:
    count: int
    path: Callable[[int], Path]  # chunk number -> its file
    lock: Path  # held while checking for every chunk and merging

    def todo(self, shard: int = 0, num_shards: int = 1) -> list[int]:
        """The chunks of this shard that are not on disk yet."""
        return [c for c in range(self.count) if c % num_shards == shard and not self.path(c).is_file()]

    def missing(self) -> int:
        return sum(not self.path(c).is_file() for c in range(self.count))

    @contextlib.contextmanager
    def merging(self) -> Iterator[bool]:
        """Hold the lock; yield whether every chunk is present (then the caller merges)."""
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.lock):
            yield self.missing() == 0
