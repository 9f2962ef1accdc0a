"""fleetexec: run a command across a fleet of servers over SSH, in parallel, safely.

>>> import fleetexec
>>> inventory = fleetexec.load_inventory("inventory.yaml")
>>> result = fleetexec.run(inventory.select("web"), "df -h /", command_timeout=30)
>>> for host, r in result.items():
...     print(host, r.status, r.exit_code, r.stdout_text)
>>> result.raise_on_failure()

Every host ends with a `HostResult` whose `Status` says what happened; a
failure on one host never raises. Exceptions (`FleetError` and below) are for
mistakes made before anything runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import FleetSession, run, run_one
    from .exceptions import ConfigError, FleetError, FleetFailure, InventoryError
    from .host import Host
    from .inventory import Inventory, load_inventory
    from .options import HostKeyPolicy, Options, Secret
    from .results import FleetResult, HostResult, Status

__all__ = [
    "ConfigError",
    "FleetError",
    "FleetFailure",
    "FleetResult",
    "FleetSession",
    "Host",
    "HostKeyPolicy",
    "HostResult",
    "Inventory",
    "InventoryError",
    "Options",
    "Secret",
    "Status",
    "load_inventory",
    "run",
    "run_one",
]

__version__ = "0.2.0"

# Names are imported on first use, so `fleetexec --help` and `fleetexec hosts`
# do not pay for the executor or the YAML loader they never touch.
_HOME = {
    "FleetSession": "api", "run": "api", "run_one": "api",
    "HostKeyPolicy": "options", "Options": "options", "Secret": "options",
    "ConfigError": "exceptions", "FleetError": "exceptions", "FleetFailure": "exceptions",
    "InventoryError": "exceptions", "Host": "host", "Inventory": "inventory",
    "load_inventory": "inventory", "FleetResult": "results", "HostResult": "results",
    "Status": "results",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'fleetexec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
