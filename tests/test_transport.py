"""FleetTransport: what it offers in the key exchange, and its packet-layer overrides.

The overrides trade paramiko's generic machinery for cheaper code (issue 10); these tests pin
that the result is the same: the same algorithm lists as paramiko's own filtering, the same
handshake-timeout decision as its timer thread, and a real connection that still works.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.packet import Packetizer

import fleetexec
from fleetexec.backends.inprocess import InProcessBackend
from fleetexec.ssh.packet import FleetPacketizer as _Packetizer
from fleetexec.ssh.transport import FleetTransport
from fleetexec.testing.sshd import OpenSSHServer

LISTS = ("kex", "keys", "ciphers", "macs", "compression", "pubkeys")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _paramikos(transport: paramiko.Transport, name: str) -> tuple[str, ...]:
    """What paramiko's own property (filtering by disabled_algorithms) returns."""
    value: tuple[str, ...] = getattr(paramiko.Transport, f"preferred_{name}").fget(transport)
    return value


def test_nothing_weak_is_offered(pair: tuple[socket.socket, socket.socket]) -> None:
    transport = FleetTransport(pair[0])
    assert not [k for k in transport.preferred_kex if "sha1" in k or k.endswith("group1")]
    assert not [c for c in transport.preferred_ciphers if "cbc" in c or "3des" in c]
    assert "ssh-rsa" not in transport.preferred_keys  # SHA-1 signatures
    assert not [m for m in transport.preferred_macs if "md5" in m or "sha1" in m]
    assert transport.preferred_ciphers[0] == "aes128-gcm@openssh.com"
    assert transport.preferred_macs[0] == "hmac-sha2-256-etm@openssh.com"
    # The post-quantum hybrid stays first; among the classical exchanges P-256 (cheapest for
    # OpenSSH's end, see FleetTransport) comes before curve25519; of the finite-field
    # groups, group14-sha256 first. Every exchange paramiko has is still offered.
    assert transport.preferred_kex[:3] == (
        "mlkem768x25519-sha256", "ecdh-sha2-nistp256", "curve25519-sha256@libssh.org")
    dh = [k for k in transport.preferred_kex if k.startswith("diffie-hellman")]
    assert dh[0] == "diffie-hellman-group14-sha256"
    assert sorted(transport.preferred_kex) == sorted(paramiko.Transport._preferred_kex)


@pytest.mark.parametrize("disabled", [None, {
    "kex": ["ecdh-sha2-nistp256"], "keys": ["rsa-sha2-512"], "ciphers": ["aes128-gcm@openssh.com"],
    "macs": ["hmac-sha2-512"], "pubkeys": ["rsa-sha2-256"],
}])
def test_the_algorithm_lists_are_paramikos_filtered_ones(
        pair: tuple[socket.socket, socket.socket], disabled: dict[str, list[str]] | None) -> None:
    transport = FleetTransport(pair[0], disabled_algorithms=disabled)
    for name in LISTS:
        assert getattr(transport, f"preferred_{name}") == _paramikos(transport, name), name
    for name, removed in (disabled or {}).items():
        assert not set(removed) & set(getattr(transport, f"preferred_{name}")), name
    # SSHClient puts the host key type known_hosts holds first, per connection: still honoured,
    # with the certificate variants after the plain ones as paramiko lists them.
    transport.get_security_options().key_types = ["ecdsa-sha2-nistp256", "ssh-ed25519"]
    assert transport.preferred_keys == _paramikos(transport, "keys") == (
        "ecdsa-sha2-nistp256", "ssh-ed25519", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ssh-ed25519-cert-v01@openssh.com")


def test_the_handshake_deadline_decides_as_paramikos_timer_did(
        pair: tuple[socket.socket, socket.socket]) -> None:
    waiting, expired = _Packetizer(pair[0]), _Packetizer(pair[1])
    assert not waiting.handshake_timed_out()  # not started: never
    waiting.start_handshake(3600.0)
    assert not waiting.handshake_timed_out()  # well before the deadline
    expired.start_handshake(0.0)
    assert expired.handshake_timed_out()  # at or past the deadline
    expired.start_handshake(3600.0)  # like paramiko's single timer: a second start moves nothing
    assert expired.handshake_timed_out()
    expired.complete_handshake()
    assert not expired.handshake_timed_out()  # a completed handshake never times out
    assert isinstance(expired, Packetizer)


def test_starting_the_handshake_starts_no_thread(
        pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("a threading.Timer was started")

    monkeypatch.setattr(threading, "Timer", refused)
    _Packetizer(pair[0]).start_handshake(15.0)
    assert isinstance(FleetTransport(pair[0]).packetizer, _Packetizer)


def test_a_server_stalling_the_key_exchange_is_cut_off_at_the_handshake_timeout(
        pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    server.sendall(b"SSH-2.0-OpenSSH_9.2 stalls after its banner\r\n")
    transport = FleetTransport(client)
    transport.handshake_timeout = 0.0  # paramiko's attribute (15 s by default)
    with pytest.raises(EOFError):  # as paramiko's timer thread ends it: EOF in read_all
        transport.start_client(timeout=60)
    transport.close()


def test_real_connections_start_no_timer_thread_and_still_run(
        sshd: OpenSSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    original = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name if type(thread) is threading.Thread else
                       type(thread).__name__)
        original(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    inventory = sshd.write_inventory(tmp_path / "inventory.yaml", ["127.0.1.1", "127.0.1.2"])
    result = fleetexec.run(list(fleetexec.load_inventory(inventory).select()), "echo ok",
                           system_known_hosts=False, backend=InProcessBackend())
    assert [(r.status, r.stdout) for r in result.values()] == [
        (fleetexec.Status.OK, b"ok\n")] * 2
    assert "Timer" not in started
    # Each connection's loop runs on a thread kept for the next one, not on its own.
    assert "FleetTransport" not in started
    assert 1 <= sum(name.startswith("fleetexec-transport") for name in started) <= 2


class _CountingSocket:
    """A socket end that counts the reads and writes the packetizer makes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.recvs, self.sends = sock, 0, 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)


def _plain_packets(count: int) -> bytes:
    """`count` unencrypted SSH packets (IGNORE messages), as a server sends them before
    the first key exchange."""
    from paramiko.message import Message

    out = b""
    with socket.socket() as unused:
        writer = _Packetizer(unused)
        for i in range(count):
            m = Message()
            m.add_byte(bytes([2]))  # MSG_IGNORE
            m.add_string(f"packet {i}" * (i + 1))
            out += writer._build_packet(m.asbytes())  # type: ignore[attr-defined]
    return out


def test_a_flight_of_packets_is_read_with_one_recv(
        pair: tuple[socket.socket, socket.socket]) -> None:
    from fleetexec.ssh.banner import give_back

    client, server = pair
    counting = _CountingSocket(client)
    packetizer = _Packetizer(counting)  # type: ignore[arg-type]
    flight = _plain_packets(5)
    give_back(packetizer, flight[:7])  # as the banner's reading hands back what followed it
    server.sendall(flight[7:])
    bodies = [packetizer.read_message()[1].get_text() for _ in range(5)]
    assert bodies == [f"packet {i}" * (i + 1) for i in range(5)]  # in order, nothing lost
    assert counting.recvs == 1  # paramiko made two per packet: ten
    server.sendall(flight[:20])  # a packet split across reads still comes whole
    threading.Timer(0.2, lambda: server.sendall(flight[20:])).start()
    assert packetizer.read_message()[1].get_text() == "packet 0"


def test_a_kept_connection_waits_in_the_kernel_and_still_looks_up_between_packets(
        pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = pair
    client.settimeout(0.1)  # as paramiko's Transport sets it (1 s in FleetTransport)
    packetizer = _Packetizer(client)
    looks: list[float] = []  # each timeout, the reader checks for a close and keepalives
    monkeypatch.setattr(packetizer, "_check_keepalive", lambda: looks.append(time.monotonic()))
    packetizer.wait_in_kernel()
    assert client.gettimeout() is None  # no poll before each call now
    threading.Timer(0.45, lambda: server.sendall(_plain_packets(1))).start()
    assert packetizer.read_message()[1].get_text() == "packet 0"
    assert len(looks) >= 2  # the kernel's timeouts came every 0.1 s meanwhile


def test_messages_sent_corked_go_out_in_one_write(
        pair: tuple[socket.socket, socket.socket]) -> None:
    from paramiko.message import Message

    client, server = pair
    counting = _CountingSocket(client)
    packetizer = _Packetizer(counting)  # type: ignore[arg-type]
    with packetizer.corked():
        for text in ("one", "two", "three"):
            m = Message()
            m.add_byte(bytes([2]))
            m.add_string(text)
            packetizer.send_message(m)
        with packetizer.corked():  # nested: still the outer one's single write
            packetizer.send_message(m)
        assert counting.sends == 0
    assert counting.sends == 1
    reader = _Packetizer(server)
    assert [reader.read_message()[1].get_text() for _ in range(4)] == [
        "one", "two", "three", "three"]


def test_the_channel_opened_behind_the_auth_gets_the_default_window_for_sftp(
        sshd: OpenSSHServer, tmp_path: Path) -> None:
    # It is opened with the small window of a command; SFTP reads a file with the window
    # of a channel opened for it (a 32 KiB one would cap a download at 32 KiB per RTT).
    import time

    from fleetexec.options import Options
    from fleetexec.resolve import resolve
    from fleetexec.ssh.connect import connect
    from fleetexec.ssh.session import WorkerContext
    from fleetexec.ssh.transport import close_client

    inventory = sshd.write_inventory(tmp_path / "inventory.yaml", ["127.0.1.3"])
    options = Options(system_known_hosts=False, use_agent=False, connect_timeout=20)
    host, = resolve(list(fleetexec.load_inventory(inventory).select()), options)
    context = WorkerContext(options)
    client = connect(host, context, time.monotonic())
    try:
        transport = client.get_transport()
        assert isinstance(transport, FleetTransport) and transport.early_channel
        channel = transport.open_session(timeout=10)
        assert channel.chanid == 0  # the early one, not a second channel
        assert channel.in_window_size == transport.default_window_size
        channel.invoke_subsystem("sftp")
        sftp = paramiko.SFTPClient(channel)
        assert sftp.normalize(".")  # the server answers on it
        sftp.close()
    finally:
        close_client(client)
        context.close_connections()


def test_padding_of_encrypted_packets_is_random_and_framed_as_paramikos() -> None:
    with socket.socket() as unused:
        ours, theirs = _Packetizer(unused), Packetizer(unused)
        for packetizer in (ours, theirs):  # as after NEWKEYS with aes128-gcm
            packetizer._Packetizer__block_engine_out = object()  # type: ignore[attr-defined]
            packetizer._Packetizer__block_size_out = 16  # type: ignore[attr-defined]
            packetizer._Packetizer__aead_out = True  # type: ignore[attr-defined]
        payloads = [b"x" * size for size in (1, 15, 16, 17, 300)] * 40
        built = [ours._build_packet(p) for p in payloads]  # type: ignore[attr-defined]
        for payload, packet in zip(payloads, built, strict=True):
            reference = theirs._build_packet(payload)  # type: ignore[attr-defined]
            padding = packet[4]
            assert len(packet) == len(reference) and packet[:5] == reference[:5]
            assert packet[5:5 + len(payload)] == payload
            assert 4 <= padding == len(packet) - 5 - len(payload)
        tails = {packet[5 + len(payload):] for payload, packet in zip(payloads, built,
                                                                      strict=True)}
        assert len(tails) == len(built)  # 200 paddings, no two alike: not zeros, not reused
