"""The persistent agent behind `fleetexec run --persist`, in the spirit of OpenSSH ControlPersist.

A per-user background process keeps each host's authenticated connection
open between CLI calls, so the next `fleetexec run --persist` skips the
handshakes. `AgentBackend` is the client side (a `Backend`); the agent runs
one `FleetSession` engine per distinct set of options. It listens on a Unix
socket in a private directory (0700 and owned by the user, socket 0600, peers
checked with SO_PEERCRED), speaks newline-delimited JSON (never pickle), and
exits after `idle` seconds without a request. Whoever can open that socket can
run commands on your hosts without authenticating, which is why the directory
is checked on every use.

Secrets travel only in a request's `secrets` field over that socket; the
agent's environment never holds them, and its engines are keyed by an HMAC
of the options, never by a password.

- `paths`: the private directory the socket lives in, checked on every use;
- `wire`: the JSON wire format (hosts, results, output) and the socket calls;
- `client`: `AgentBackend` and `stop_agent` (the CLI process), and starting the agent;
- `server`: the agent process itself (`python -m fleetexec.agent`).
"""

from __future__ import annotations

from .client import AgentBackend, stop_agent
from .paths import choose_socket_path, socket_path

__all__ = ["AgentBackend", "choose_socket_path", "socket_path", "stop_agent"]
