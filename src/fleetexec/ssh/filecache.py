"""Values built from files (parsed known_hosts, loaded keys), rebuilt when a file changes.

Workers live long (a `FleetSession`, the `--persist` agent), and known_hosts
and key files change under them: a key gets revoked, a host added, a key
file deleted. Re-reading them for every connection would cost a parse each
time; instead each file is `os.stat`-ed (device, inode, size, mtime, ctime),
one call per file per use, and the value is rebuilt only when that changed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["FileCache"]

T = TypeVar("T")

# File times come from a coarse clock (a few ms on Linux): an edit made in the
# same tick as a change we already read could leave the stat as it was. So a
# value is kept only if it was built at least this long after its files' last
# change; until then every use builds it again. Short, because a burst of
# accept-new appends (or a freshly written key) would otherwise mean a re-read
# per connection; an edit that also keeps the size and inode within 0.1 s of
# the previous one is the only change this can miss, and only until the next.
_SETTLED_NS = 100_000_000

_State = tuple[int, int, int, int, int] | None


def _state(path: str) -> _State:
    try:
        info = os.stat(path)
    except OSError:
        return None  # missing or unreadable: the build says why, if it matters
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class FileCache(Generic[T]):
    """`get(paths)`: `build(paths)`, cached until one of `paths` changes on disk.

    A failing build (it raises) is not cached: the next `get` tries again.
    """

    def __init__(self, build: Callable[[tuple[str, ...]], T]) -> None:
        self._build = build
        self._entries: dict[tuple[str, ...], tuple[tuple[_State, ...], T]] = {}
        self._lock = threading.Lock()

    def get(self, paths: tuple[str, ...]) -> T:
        # Clock, then stat, then read: a change made after the stat is seen next time.
        now = time.time_ns()
        states = tuple(_state(p) for p in paths)
        with self._lock:
            cached = self._entries.get(paths)
            if cached is not None and cached[0] == states:
                return cached[1]
            value = self._build(paths)
            settled = all(s is None or now - max(s[3], s[4]) >= _SETTLED_NS for s in states)
            if settled:
                self._entries[paths] = (states, value)
            else:
                self._entries.pop(paths, None)
            return value
