"""fleetexec's testing kit: a mock SSH fleet with scripted hosts, for your own tests.

    from fleetexec.testing import Fault, MockFleet, MockHost, Reply

    with MockFleet([MockHost(replies={"uptime": Reply("up 3 days\\n")}),
                    MockHost(fault=Fault.hang())]) as fleet:
        fleet.inventory_path      # YAML inventory: host1, host2 on 127.77.0.x
        fleet.known_hosts_path    # their freshly generated host keys

Protocol-level misbehaviour (tarpit, black hole, garbage banners) comes from
`FaultServer`; `OpenSSHServer` starts a real, throwaway OpenSSH sshd.
`ScriptedBackend` answers from the same `MockHost` scripts with no sockets
at all, for unit tests that should take milliseconds.
With pytest the ``mock_fleet`` and ``mock_fleet_factory`` fixtures are
available without any import (see `fleetexec.testing.plugin`).
"""

from .faults import FaultServer, closed_port
from .mockfleet import BINARY_PAYLOAD, Fault, MockFleet, MockHost, MockServer, Reply
from .scripted import ScriptedBackend
from .sshd import OpenSSHServer

__all__ = [
    "BINARY_PAYLOAD", "Fault", "FaultServer", "MockFleet", "MockHost", "MockServer",
    "OpenSSHServer", "Reply", "ScriptedBackend", "closed_port",
]
