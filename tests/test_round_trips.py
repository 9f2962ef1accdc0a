"""Round trips per command, counted without a clock, and every pipelined step's fallback.

A command on a host with one accepted key takes four round trips (plus TCP): banner
and KEXINIT; the key exchange; the service and user-auth requests with the session
channel behind them; the exec request. A rejected key costs one more. The counts come
from `lockstep.LockstepPipe` (an in-memory connection that hands the server's answers
over only when both sides wait), so they are exact on a loaded machine too. The
fallbacks: a server that refuses the early channel (CHANNEL_OPEN_FAILURE, as
paramiko does before the authentication succeeded; UNIMPLEMENTED, as OpenSSH does;
or a refusal even after it) still runs the command, one round trip later.
Against the real sshd, `test_real_sshd_*` hold its answers back until the client
has sent what it should have sent without waiting: a client that waited would
stall there and time out instead of passing.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

import fleetexec
from fleetexec import Host
from fleetexec.options import Options
from fleetexec.resolve import resolve
from fleetexec.results import HostResult, Status
from fleetexec.ssh import connect as connect_module
from fleetexec.ssh.session import WorkerContext, run_on_host
from fleetexec.testing._mockserver import new_key
from fleetexec.testing.sshd import OpenSSHServer
from lockstep import LockstepPipe, ReactiveServer, hand_over

PORT = 2222


def _key_file(path: Path) -> tuple[paramiko.PKey, str]:
    key, pem = new_key("ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key, str(path)


class Rig:
    """A client key or two, a host key, known_hosts, and one lock-step run of `true`."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp, self.monkeypatch = tmp_path, monkeypatch
        self.host_key, _ = new_key("ed25519")
        self.good, self.good_path = _key_file(tmp_path / "id_good")
        self.bad, self.bad_path = _key_file(tmp_path / "id_bad")
        self.known_hosts = tmp_path / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{PORT} ssh-ed25519 "
                                    f"{self.host_key.get_base64()}\n")
        self.server: ReactiveServer | None = None

    def run(self, key_files: tuple[str, ...], channels: str = "normal",
            early_channel: bool | None = None) -> tuple[HostResult, LockstepPipe]:
        pipe = LockstepPipe()
        self.monkeypatch.setattr(connect_module, "_create_connection", hand_over(pipe))
        if early_channel is not None:
            from fleetexec.ssh import transport
            original = transport.FleetTransport.__init__

            def forced(this: transport.FleetTransport, *args: object, **kwargs: object) -> None:
                original(this, *args, early_channel=early_channel, **kwargs)  # type: ignore[arg-type]

            self.monkeypatch.setattr(transport.FleetTransport, "__init__", forced)
        options = Options(known_hosts=(str(self.known_hosts),), system_known_hosts=False,
                          use_agent=False, use_ssh_config=False, connect_timeout=20,
                          command_timeout=20)
        host, = resolve([Host("h", address="127.0.0.1", port=PORT, user="u",
                              key_files=key_files)], options)
        context = WorkerContext(options)
        self.server = ReactiveServer(pipe.server, self.host_key, self.good, channels)
        results: list[HostResult] = []
        thread = threading.Thread(target=lambda: results.append(
            run_on_host(host, "true", context)))
        try:
            thread.start()
            thread.join(30)
        finally:
            pipe.stop()
            self.server.close()
            context.close_connections()
        assert results, "the client never finished"
        return results[0], pipe


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    yield Rig(tmp_path, monkeypatch)


def test_one_accepted_key_costs_four_round_trips(rig: Rig) -> None:
    result, pipe = rig.run((rig.good_path,))
    assert (result.status, result.exit_code) == (Status.OK, 0), result.error
    assert pipe.rounds == 4, pipe.flights


def test_a_rejected_key_costs_one_more_round_trip_and_one_service_request(rig: Rig) -> None:
    result, pipe = rig.run((rig.bad_path, rig.good_path))
    assert result.status is Status.OK, result.error
    assert pipe.rounds == 5, pipe.flights
    assert rig.server is not None
    assert len(rig.server.auth_requests) == 2  # each key once, signed


def test_two_rejected_keys_cost_two_more(rig: Rig) -> None:
    other, other_path = _key_file(rig.tmp / "id_other")
    result, pipe = rig.run((rig.bad_path, other_path, rig.good_path))
    assert result.status is Status.OK, result.error
    assert pipe.rounds == 6, pipe.flights


@pytest.mark.parametrize("channels", ["unimplemented", "normal"])
def test_an_early_channel_refused_after_a_rejected_key_is_asked_for_again(
        rig: Rig, channels: str) -> None:
    # The channel sent behind the rejected key is refused (UNIMPLEMENTED as OpenSSH, or
    # OPEN_FAILURE as paramiko); the one behind the accepted key is the one used.
    result, pipe = rig.run((rig.bad_path, rig.good_path), channels=channels)
    assert result.status is Status.OK, result.error
    assert pipe.rounds == 5, pipe.flights


def test_a_server_refusing_the_early_channel_gets_a_normal_one_after_auth(rig: Rig) -> None:
    result, pipe = rig.run((rig.good_path,), channels="refuse-first")
    assert result.status is Status.OK, result.error
    assert pipe.rounds == 5, pipe.flights  # the fallback's own round trip
    assert rig.server is not None and rig.server.opened == 2


def test_an_early_channel_opened_despite_a_rejection_is_closed_and_the_newest_used(
        rig: Rig) -> None:
    result, pipe = rig.run((rig.bad_path, rig.good_path), channels="pre-auth")
    assert result.status is Status.OK, result.error
    assert pipe.rounds == 5, pipe.flights
    assert rig.server is not None and rig.server.opened == 2
    assert rig.server.closed >= 1  # the spare one, closed by the client


def test_without_the_early_channel_the_open_waits_for_the_auth(rig: Rig) -> None:
    # A server not known to answer early channels (by its banner) is not sent one.
    result, pipe = rig.run((rig.good_path,), early_channel=False)
    assert result.status is Status.OK, result.error
    assert pipe.rounds == 5, pipe.flights
    assert rig.server is not None and rig.server.opened == 1


def test_a_rejected_only_key_is_auth_failed_with_one_credential_tried(rig: Rig) -> None:
    result, pipe = rig.run((rig.bad_path,))
    assert result.status is Status.AUTH_FAILED
    assert result.error is not None and result.error.endswith("(1 credential(s) tried)")
    assert pipe.rounds == 3, pipe.flights


def test_early_channel_welcome_by_banner() -> None:
    from fleetexec.ssh.pipeline import early_channel_welcome

    assert early_channel_welcome("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3")
    assert early_channel_welcome("SSH-2.0-paramiko_5.1.0")
    assert not early_channel_welcome("SSH-2.0-dropbear_2022.83")
    assert not early_channel_welcome("SSH-2.0-Go")
    assert not early_channel_welcome("SSH-2.0")


def test_paramiko_internals_the_pipelining_relies_on_are_there() -> None:
    # Name-mangled packetizer attributes (banner.give_back, pipeline.send_numbered):
    # a paramiko upgrade that renames them must fail here, not in the field.
    from paramiko.packet import Packetizer

    packetizer = Packetizer(socket.socket())
    try:
        for name in ("_Packetizer__remainder", "_Packetizer__sequence_number_out",
                     "_Packetizer__write_lock"):
            assert hasattr(packetizer, name), name
        assert callable(packetizer._read_timeout)
    finally:
        packetizer.close()


# ---- the real sshd: answers held back until the client has sent what it should ---------


class HoldingRelay:
    """A TCP relay to the sshd that holds the server's bytes back until the client has sent
    what it should have without waiting: its KEXINIT (its banner first) before the
    server's banner passes, so a client waiting for that banner stalls; and, for each
    gate (trigger, need), encrypted server packets read once the client had sent
    `trigger` packets after its NEWKEYS pass only when it has sent `need` (AES-GCM keeps
    packet lengths in clear text, so packets can be counted, not read)."""

    def __init__(self, port: int, gates: list[tuple[int, int]]) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.8.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.upstream = port
        self.gates = gates
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        with client, socket.create_connection(("127.0.8.1", self.upstream)) as server:
            self._relay(client, server)

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        gate = threading.Condition()
        sent = {"kexinit": 0, "encrypted": 0, "done": 0}

        def client_to_server() -> None:
            parser = _Packets()
            while data := _recv(client):
                server.sendall(data)
                with gate:
                    for kind, _ in parser.split(data):
                        if kind == 20:
                            sent["kexinit"] = 1
                        elif kind == "encrypted":
                            sent["encrypted"] += 1
                    gate.notify_all()
            with gate:
                sent["done"] = 1
                gate.notify_all()
            _close(server)

        upstream = threading.Thread(target=client_to_server, daemon=True)
        upstream.start()
        parser = _Packets()
        while data := _recv(server):
            for kind, chunk in parser.split(data):
                with gate:
                    if kind == "encrypted":
                        seen = sent["encrypted"]
                        need = max([n for t, n in self.gates if t <= seen], default=0)
                        while sent["encrypted"] < need and not sent["done"]:
                            gate.wait(10)
                    else:
                        while not sent["kexinit"] and not sent["done"]:
                            gate.wait(10)
                client.sendall(chunk)
        _close(client)
        upstream.join(10)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


class _Packets:
    """Splits an SSH byte stream into the banner and packets: plain before NEWKEYS, AES-GCM
    after it (4-byte clear length, then the payload and a 16-byte tag)."""

    def __init__(self) -> None:
        self.buf = b""
        self.banner = False
        self.encrypted = False

    def split(self, data: bytes) -> list[tuple[object, bytes]]:
        self.buf += data
        out: list[tuple[object, bytes]] = []
        while True:
            if not self.banner:
                end = self.buf.find(b"\n")
                if end < 0:
                    return out
                line, self.buf = self.buf[:end + 1], self.buf[end + 1:]
                self.banner = line.startswith(b"SSH-")
                out.append(("banner", line))
                continue
            if len(self.buf) < 6:
                return out
            length = int.from_bytes(self.buf[:4], "big")
            total = 4 + length + (16 if self.encrypted else 0)
            if len(self.buf) < total:
                return out
            packet, self.buf = self.buf[:total], self.buf[total:]
            kind: object = "encrypted" if self.encrypted else packet[5]
            if kind == 21:
                self.encrypted = True
            out.append((kind, packet))


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _through(relay: HoldingRelay, sshd: OpenSSHServer, tmp_path: Path,
             key_files: tuple[str, ...]) -> HostResult:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.8.1]:{relay.port} {sshd.host_public_key}\n")
    host = Host("h", address="127.0.8.1", port=relay.port, user=sshd.user, key_files=key_files)
    result = fleetexec.run([host], "echo pipelined", known_hosts=[str(known)],
                           system_known_hosts=False, use_agent=False, use_ssh_config=False,
                           connect_timeout=8, command_timeout=8)
    return result["h"]


def test_real_sshd_takes_the_pipelined_handshake(sshd: OpenSSHServer, tmp_path: Path) -> None:
    # Server answers wait until the client sent its banner and KEXINIT, and (after its
    # NEWKEYS) the service request, the user-auth request and the channel open.
    relay = HoldingRelay(sshd.port, gates=[(0, 3)])
    try:
        r = _through(relay, sshd, tmp_path, (str(sshd.client_key_path),))
    finally:
        relay.close()
    assert (r.status, r.stdout) == (Status.OK, b"pipelined\n"), r.error


def test_real_sshd_refuses_the_early_channel_of_a_rejected_key_and_takes_the_next(
        sshd: OpenSSHServer, tmp_path: Path) -> None:
    _, bad = _key_file(tmp_path / "id_bad")
    # service + auth(bad) + open; then auth(good) + open, without waiting in between.
    relay = HoldingRelay(sshd.port, gates=[(0, 3), (4, 5)])
    try:
        r = _through(relay, sshd, tmp_path, (bad, str(sshd.client_key_path)))
    finally:
        relay.close()
    assert (r.status, r.stdout) == (Status.OK, b"pipelined\n"), r.error


# ---- the mock fleet (mockssh: paramiko servers on sockets) ----------------------------


def test_mock_fleet_with_a_rejected_key_first_runs_the_command(tmp_path: Path) -> None:
    # mockssh refuses the channel sent behind the rejected key (CHANNEL_OPEN_FAILURE, as it
    # is not authenticated yet) and takes the one sent behind the accepted key.
    from fleetexec.testing import MockFleet

    _, stranger = _key_file(tmp_path / "id_stranger")
    with MockFleet(2) as fleet:
        result = fleet.run("hostname", key_files=[stranger, str(fleet.key_path)],
                           identities_only=True)
    assert {name: (r.status, r.stdout) for name, r in result.items()} == {
        "host1": (Status.OK, b"host1\n"), "host2": (Status.OK, b"host2\n")}


def test_real_sshd_handshake_over_a_paramiko_channel(
        sshd: OpenSSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As through a jump host: the socket is a direct-tcpip Channel of another connection,
    # which has no MSG_PEEK and no socket options. The banner, the pipelined handshake and
    # the command all go through it.
    with paramiko.SSHClient() as jump:
        jump.set_missing_host_key_policy(paramiko.RejectPolicy())
        jump.get_host_keys().add(f"[127.0.8.3]:{sshd.port}", "ssh-ed25519",
                                 paramiko.Ed25519Key(data=_blob(sshd.host_public_key)))
        jump.connect("127.0.8.3", sshd.port, username=sshd.user,
                     key_filename=str(sshd.client_key_path), look_for_keys=False,
                     allow_agent=False, timeout=10)
        transport = jump.get_transport()
        assert transport is not None
        channels: list[paramiko.Channel] = []

        def through_jump(host: Host, deadline: float, timeout: float) -> paramiko.Channel:
            chan = transport.open_channel("direct-tcpip", ("127.0.8.4", sshd.port),
                                          ("127.0.0.1", 0), timeout=timeout)
            channels.append(chan)
            return chan

        monkeypatch.setattr(connect_module, "_open_socket", through_jump)
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.8.4]:{sshd.port} {sshd.host_public_key}\n")
        host = Host("h", address="127.0.8.4", port=sshd.port, user=sshd.user,
                    key_files=(str(sshd.client_key_path),))
        options = Options(known_hosts=(str(known),), system_known_hosts=False, use_agent=False,
                          use_ssh_config=False, connect_timeout=10, command_timeout=10)
        resolved, = resolve([host], options)
        context = WorkerContext(options)
        try:
            r = run_on_host(resolved, "echo via-channel", context)
        finally:
            context.close_connections()
        # The connection's own thread closes its channel on the way out: before the jump.
        context.transport_threads.stop()
    assert (r.status, r.stdout) == (Status.OK, b"via-channel\n"), r.error
    assert len(channels) == 1


def _blob(public_line: str) -> bytes:
    import base64

    return base64.b64decode(public_line.split()[1])
