"""fleetexec's exceptions: one root, the tree written here.

```
FleetError                      root of everything fleetexec raises
├── InventoryError (ValueError) a broken inventory or host pattern; names file, line, key
├── ConfigError (ValueError)    a bad option or credential (unreadable key, no passphrase)
└── FleetFailure                raised only on request by FleetResult.raise_on_failure()
```

A failure on one host is never an exception: it is a `HostResult` with a
`Status`. These exceptions are for mistakes made before anything runs, and for
callers who ask for a run's failures to be raised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import FleetResult

__all__ = ["ConfigError", "FleetError", "FleetFailure", "InventoryError"]


class FleetError(Exception):
    """Root of every exception fleetexec raises."""


class InventoryError(FleetError, ValueError):
    """An inventory file or host pattern is invalid.

    `str()` is one line naming where the problem is, e.g.
    `inventory.yaml:12: hosts.web1.port: expected an integer 1-65535, got '0022'`.
    """

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.message = message
        where = ":".join(str(p) for p in (path, line) if p is not None)
        text = f"{key}: {message}" if key else message
        super().__init__(f"{where}: {text}" if where else text)


class ConfigError(FleetError, ValueError):
    """An option or credential is unusable (found before any connection is made)."""


class FleetFailure(FleetError):
    """Some hosts did not succeed; `.result` holds the whole `FleetResult`."""

    def __init__(self, result: FleetResult) -> None:
        self.result = result
        failed = result.failed
        names = ", ".join(list(failed)[:5]) + (" …" if len(failed) > 5 else "")
        super().__init__(f"{len(failed)} of {len(result)} hosts did not succeed: {names}")
