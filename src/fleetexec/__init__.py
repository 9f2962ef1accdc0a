"""fleetexec: run a command across a fleet of servers over SSH, in parallel, safely.

>>> import fleetexec
>>> inventory = fleetexec.load_inventory("inventory.yaml")
>>> result = fleetexec.run(inventory.select("web"), "df -h /")
>>> for host, r in result.items():
...     print(host, r.status, r.exit_code, r.stdout_text)
>>> result.raise_on_failure()

Every host ends with a `HostResult` whose `Status` says what happened; a
failure on one host never raises. Exceptions (`FleetError` and below) are for
mistakes made before anything runs.
"""

from .api import FleetSession, HostKeyPolicy, run
from .exceptions import ConfigError, FleetError, FleetFailure, InventoryError
from .host import Host
from .inventory import Inventory, load_inventory
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
    "Status",
    "load_inventory",
    "run",
]

__version__ = "0.1.0"
