"""A fleet of in-process mock SSH servers with scripted, per-host behaviour.

    >>> with MockFleet(2) as fleet:
    ...     with fleet.client("host2") as client:
    ...         client.exec_command("hostname")[1].read()
    b'host2\\n'

`MockFleet` (this module) starts the hosts and writes the files a client
needs; `MockHost`, `Reply` and `Fault` (in `_mockscript`) say what a host
does; `MockServer` (in `_mockserver`) serves one host. It is built on
mock-ssh-server (``mockssh``: its `Server` and `Handler` are subclassed),
changed where a fleet needs more:

* each host binds its own loopback address (127.77.0.1, 127.77.0.2, ...; only
  127.0.0.1 where the OS has no other loopback addresses, e.g. macOS) on an
  ephemeral port, and serves its own fresh host key (mockssh serves one
  packaged RSA key, the same for everyone who installs it);
* commands are scripted and never run on the test machine unless a host opts
  in with ``passthrough=True`` (mockssh runs every command in a local shell);
* mockssh's warnings: it starts threads with ``setDaemon()``
  (DeprecationWarning, raised *inside* its accept thread under ``-W error``,
  which kills that thread) and leaves subprocess pipes to the garbage
  collector (ResourceWarning). Those code paths are replaced here, so a suite
  running with ``-W error`` needs no filter for the mock fleet.
"""


from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import paramiko

from ._mockscript import BINARY_PAYLOAD, Fault, MockHost, Reply, Responder
from ._mockserver import MockServer, new_key

if TYPE_CHECKING:
    from ..results import FleetResult

__all__ = ["BINARY_PAYLOAD", "Fault", "MockFleet", "MockHost", "MockServer", "Reply"]


class MockFleet:
    """A started-on-demand fleet of `MockServer` hosts with an inventory to match.

    ``hosts`` is a count (``host1..hostN``, built-in behaviour) or `MockHost`
    specs. ``default`` answers commands no host scripted. Files (user key
    ``id_ed25519`` and ``.pub``, ``known_hosts``, ``inventory.yaml``) go to
    ``workdir``: a temporary directory unless given; a temporary one is removed
    by `stop`. A fleet starts once.

    >>> with MockFleet([MockHost(replies={"uptime": Reply("up\\n")}), MockHost()]) as fleet:
    ...     with fleet.client("host1") as client:
    ...         client.exec_command("uptime")[1].read()
    b'up\\n'
    """

    def __init__(
        self,
        hosts: int | Sequence[MockHost] = 3,
        *,
        default: Responder | None = None,
        user: str = "fleet",
        workdir: str | os.PathLike[str] | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.specs = [MockHost() for _ in range(hosts)] if isinstance(hosts, int) else list(hosts)
        self.names = [s.name or f"host{i}" for i, s in enumerate(self.specs, 1)]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate host names: {self.names}")
        self.default, self.user, self.connect_timeout = default, user, connect_timeout
        self._workdir_arg = workdir
        self.hosts: list[MockServer] = []
        self.workdir: Path | None = None

    def start(self) -> MockFleet:
        """Generate keys, start every host, write known_hosts and the inventory."""
        if self.workdir is not None:
            raise RuntimeError("fleet already started")
        given = self._workdir_arg
        workdir = Path(given) if given is not None else Path(tempfile.mkdtemp(prefix="mockfleet-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self._owns_workdir = workdir.resolve(), given is None
        try:
            user_key, pem = new_key("ed25519")
            _write_private(self.key_path, pem)
            public = f"{user_key.get_name()} {user_key.get_base64()} mockfleet\n"
            self.key_path.with_suffix(".pub").write_text(public)
            for i, (spec, name) in enumerate(zip(self.specs, self.names, strict=True)):
                address = f"127.77.{i // 254}.{i % 254 + 1}"
                server = MockServer(spec, name, address, self.user, str(self.key_path),
                                    self.default)
                self.hosts.append(server.__enter__())
            self.known_hosts_path.write_text("".join(h.known_hosts_line + "\n" for h in self))
            self.inventory_path.write_text(self._inventory())
        except BaseException:
            self.stop()
            raise
        return self

    def _inventory(self) -> str:
        lines = [
            "# written by fleetexec.testing.MockFleet",
            "defaults:",
            f"  user: {_scalar(self.user)}",
            f"  key_files: [{_scalar(str(self.key_path))}]",
            f"  known_hosts_file: {_scalar(str(self.known_hosts_path))}",
            f"  connect_timeout: {self.connect_timeout:g}",
            "hosts:" if self.hosts else "hosts: {}",
        ]
        lines += [f"  {_scalar(h.name)}: {{address: {h.address}, port: {h.port}}}" for h in self]
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        """Stop every host, close their connections; remove a temporary workdir."""
        for server in self.hosts:
            server.stopping.set()  # wake every waiting command at once, then close
        for server in self.hosts:
            server.__exit__(None, None, None)
        if self.workdir is not None and self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _path(self, name: str) -> Path:
        if self.workdir is None:
            raise RuntimeError("fleet not started")
        return self.workdir / name

    @property
    def key_path(self) -> Path:
        """The fleet's ed25519 user private key (0600); the public key is beside it (.pub)."""
        return self._path("id_ed25519")

    @property
    def known_hosts_path(self) -> Path:
        """OpenSSH known_hosts with one ``[address]:port type base64`` line per host."""
        return self._path("known_hosts")

    @property
    def inventory_path(self) -> Path:
        """The fleetexec YAML inventory naming every host."""
        return self._path("inventory.yaml")

    def run(self, command: str, **options: Any) -> FleetResult:
        """`fleetexec.run(command)` on every host of this fleet, through the real pipeline.

        Host keys are checked strictly against this fleet's known_hosts only
        (`system_known_hosts=False` unless you pass it), and neither your ssh
        config nor your agent applies (`use_ssh_config=False`, `use_agent=False`),
        so a test means the same on every machine; other options go to
        `fleetexec.run` unchanged.

            result = fleet.run("uptime", command_timeout=2)
            assert result["host1"].ok
        """
        from ..api import run
        from ..inventory import load_inventory

        options.setdefault("system_known_hosts", False)
        options.setdefault("use_ssh_config", False)
        options.setdefault("use_agent", False)
        return run(load_inventory(self.inventory_path).select(), command, **options)

    def client(self, name: str, *, timeout: float = 5.0) -> paramiko.SSHClient:
        """A connected, strictly verifying client for host ``name``."""
        return self[name].client(timeout=timeout)

    def __getitem__(self, name: str) -> MockServer:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def __iter__(self) -> Iterator[MockServer]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __enter__(self) -> MockFleet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
_YAML11_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def _scalar(text: str) -> str:
    """A YAML scalar for ``text``, plain when that is unambiguous, else a JSON string.

    Hand-written so the kit needs no YAML library (JSON strings are valid YAML).
    """
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML11_WORDS:
        return text
    return json.dumps(text)


def _write_private(path: Path, data: bytes) -> None:
    """Create the key file 0600 from the start (never chmod after writing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
