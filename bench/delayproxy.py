"""A userspace TCP delay proxy: every byte crosses it RTT/2 late, in each direction.

    python bench/delayproxy.py --rtt 0.05 --listen 127.0.3.1-127.0.3.254 --port 2200 \
        --upstream-port 41234                      # 127.0.3.X:2200 -> 127.0.3.X:41234
    python bench/delayproxy.py --selftest --rtt 0.05 --connections 1000

Kernel netem is not available here, so this stands in for a network with a
round-trip time: it listens on loopback addresses (each one a "host"), and for
each accepted connection connects to the same address on `--upstream-port`
(where one sshd serves every 127.x.y.z), then forwards each chunk it reads
RTT/2 later, in order, both ways. End of file and resets are forwarded the same
way, RTT/2 after they were seen.

What it models: the kernel completes the client's TCP handshake at once
(`connect()` returns immediately), and the upstream connection is opened RTT/2
after the accept, so the server "accepts" when a real server would (when the
client's ACK arrives) and its first bytes reach the client one RTT after
`connect()` returned. The TCP handshake itself (one RTT on a real network) is
not delayed: figures measured through the proxy are round trips *plus TCP*.

How it keeps its timing: one thread, one epoll loop, a heap of due deliveries
(no sleep per chunk); TCP_NODELAY on both sides (otherwise delayed ACKs and
Nagle add tens of ms); run as its own process, at nice -5 when root, so the
clients and the sshd being measured do not starve it. `--selftest` measures
the round-trip time of 1-byte ping-pongs through it, on one connection and on
many at once, and prints them next to the configured RTT.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import ipaddress
import itertools
import os
import resource
import selectors
import signal
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable

_READ = 256 * 1024
_BACKLOG = 4096


def _loopback_range(spec: str) -> list[str]:
    """'127.0.3.1-127.0.3.9' or '127.0.3.1' or a comma list of those; loopback only."""
    out: list[str] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        lo = ipaddress.IPv4Address(first.strip())
        hi = ipaddress.IPv4Address(last.strip()) if last else lo
        for n in range(int(lo), int(hi) + 1):
            ip = ipaddress.IPv4Address(n)
            if not ip.is_loopback:
                raise SystemExit(f"delayproxy: {ip} is not a loopback address")
            if n & 0xFF not in (0, 255):
                out.append(str(ip))
    return out


class _Side:
    """One socket of a proxied pair: what is still to be written to it, and its state."""

    __slots__ = ("closed", "connected", "eof_pending", "out", "peer", "read_done", "sock",
                 "write_shut")

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.peer: _Side | None = None
        self.out = bytearray()  # due bytes the kernel has not taken yet
        self.connected = sock is not None
        self.read_done = False  # end of file (or an error) read from this socket
        self.eof_pending = False  # shut our write side once `out` is flushed
        self.write_shut = False
        self.closed = False


class DelayProxy:
    """The event loop. `delay` is one way (RTT/2), in seconds."""

    def __init__(self, delay: float, upstream_port: int,
                 upstream_host: Callable[[str], str] = lambda local: local) -> None:
        self.delay = delay
        self.upstream_port = upstream_port
        self.upstream_host = upstream_host
        self.sel = selectors.DefaultSelector()
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.order = itertools.count()
        self.listeners: list[socket.socket] = []
        self.live = 0
        self.accepted = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self.stopping = False

    # -- set-up ---------------------------------------------------------------------
    def listen(self, address: str, port: int) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
        self.listeners.append(sock)
        self.sel.register(sock, selectors.EVENT_READ, ("listen", sock))
        bound: int = sock.getsockname()[1]
        return bound

    def stop(self) -> None:
        self.stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _at(self, delay: float, action: Callable[[], None]) -> None:
        # Equal delays keep their order (the counter breaks ties): bytes never overtake.
        heapq.heappush(self.heap, (time.monotonic() + delay, next(self.order), action))

    # -- the loop -------------------------------------------------------------------
    def run(self) -> None:
        while not self.stopping:
            timeout = None
            if self.heap:
                timeout = max(0.0, self.heap[0][0] - time.monotonic())
            for key, mask in self.sel.select(timeout):
                kind, obj = key.data
                if kind == "listen":
                    self._accept(obj)
                elif kind == "wake":
                    try:
                        self._wake_r.recv(64)
                    except BlockingIOError:
                        pass
                else:
                    if mask & selectors.EVENT_WRITE and not obj.closed:
                        self._flush(obj)
                    if mask & selectors.EVENT_READ and not obj.closed:
                        self._readable(obj)
            now = time.monotonic()
            while self.heap and self.heap[0][0] <= now:
                heapq.heappop(self.heap)[2]()
        for sock in self.listeners:
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and friends: drop this one, keep serving
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client, server = _Side(sock), _Side(None)
            client.peer, server.peer = server, client
            self.live += 1
            self.accepted += 1
            self._update(client)
            local = sock.getsockname()[0]
            # The server sees the connection when a real one would: as the ACK arrives.
            self._at(self.delay, lambda s=server, a=local: self._connect_upstream(s, a))

    def _connect_upstream(self, side: _Side, local: str) -> None:
        if side.closed:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        side.sock = sock
        try:
            sock.connect((self.upstream_host(local), self.upstream_port))
        except BlockingIOError:
            pass
        except OSError:
            self._reset(side)
            return
        self._update(side)

    def _readable(self, side: _Side) -> None:
        sock = side.sock
        assert sock is not None  # noqa: S101
        if not side.connected:
            return  # a connecting socket: _flush sees the outcome
        try:
            data = sock.recv(_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset: the other end gets one too, RTT/2 later
            peer = side.peer
            self._close(side)
            self._at(self.delay, lambda: self._reset(peer))
            return
        peer = side.peer
        if not data:
            side.read_done = True
            self._update(side)
            self._at(self.delay, lambda: self._deliver_eof(peer))
            return
        self._at(self.delay, lambda: self._deliver(peer, data))

    def _deliver(self, side: _Side | None, data: bytes) -> None:
        if side is None or side.closed or side.write_shut:
            return
        side.out += data
        if side.connected:
            self._flush(side)

    def _deliver_eof(self, side: _Side | None) -> None:
        if side is None or side.closed:
            return
        side.eof_pending = True
        if side.connected:
            self._flush(side)

    def _flush(self, side: _Side) -> None:
        sock = side.sock
        assert sock is not None  # noqa: S101
        if not side.connected:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._reset(side)
                return
            side.connected = True
        while side.out:
            try:
                sent = sock.send(side.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._reset(side)
                return
            del side.out[:sent]
        if not side.out and side.eof_pending and not side.write_shut:
            side.write_shut = True
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        peer = side.peer
        if side.write_shut and peer is not None and peer.write_shut:
            self._close(side)  # both ends of file delivered: the pair is done
            self._close(peer)
            return
        self._update(side)

    def _update(self, side: _Side) -> None:
        """Watch the socket for what is pending: reading until its end of file, writing
        while bytes wait (or while connecting)."""
        if side.closed or side.sock is None:
            return
        events = 0
        if side.connected and not side.read_done:
            events |= selectors.EVENT_READ
        if side.out or not side.connected:
            events |= selectors.EVENT_WRITE
        registered = side.sock in self.sel.get_map()
        if events and registered:
            self.sel.modify(side.sock, events, ("side", side))
        elif events:
            self.sel.register(side.sock, events, ("side", side))
        elif registered:
            self.sel.unregister(side.sock)

    def _reset(self, side: _Side | None) -> None:
        if side is None or side.closed:
            return
        if side.sock is not None:
            try:  # linger 0: close() sends RST, as the other end did
                side.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            except OSError:
                pass
        peer = side.peer
        self._close(side)
        if peer is not None and not peer.closed:
            self._at(self.delay, lambda: self._reset(peer))

    def _close(self, side: _Side) -> None:
        if side.closed:
            return
        side.closed = True
        if side.sock is not None:
            if side.sock in self.sel.get_map():
                self.sel.unregister(side.sock)
            side.sock.close()
        peer = side.peer
        if peer is not None and peer.closed:
            self.live -= 1


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _prioritise() -> None:
    if os.geteuid() == 0:
        try:
            os.nice(-5)
        except OSError:
            pass


# ---- self test: ping-pong through the proxy ------------------------------------------

def _echo_server(address: str) -> tuple[socket.socket, int]:
    """A threaded echo server on `address` that speaks first (one greeting byte, as an
    SSH server sends its banner); returns its listening socket and port."""
    listener = socket.socket()
    listener.bind((address, 0))
    listener.listen(_BACKLOG)

    def serve(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            conn.sendall(b"g")
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    port: int = listener.getsockname()[1]
    return listener, port


def _pingpong(address: str, port: int, count: int, gap: float = 0.0) -> tuple[float, list[float]]:
    """Connect; the time until the greeting arrives; then `count` 1-byte round trips."""
    t0 = time.perf_counter()
    with socket.create_connection((address, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t1 = time.perf_counter()
        if sock.recv(1) != b"g":
            raise RuntimeError("no greeting")
        first = time.perf_counter() - t1
        del t0
        times = []
        for _ in range(count):
            if gap:
                time.sleep(gap)
            t0 = time.perf_counter()
            sock.sendall(b"p")
            if not sock.recv(16):
                raise RuntimeError("echo closed")
            times.append(time.perf_counter() - t0)
    return first, times


def selftest(rtt: float, connections: int, address: str = "127.0.9.1") -> None:
    """Measure ping-pong RTT through a proxy process on one and on many connections."""
    import subprocess

    listener, echo_port = _echo_server(address)
    proxy_port = _free_port(address)
    proc = subprocess.Popen([sys.executable, __file__, "--rtt", str(rtt), "--listen", address,
                             "--port", str(proxy_port), "--upstream-port", str(echo_port)],
                            stdout=subprocess.DEVNULL)
    try:
        _wait_port(address, proxy_port)
        first, one = _pingpong(address, proxy_port, 50)
        results: list[tuple[float, list[float]]] = []
        lock = threading.Lock()

        def worker() -> None:
            got = _pingpong(address, proxy_port, 5, gap=rtt)
            with lock:
                results.append(got)

        threads = [threading.Thread(target=worker) for _ in range(connections)]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t0
        many = sorted(x for _, r in results for x in r)
        firsts = sorted(f for f, _ in results)
        ms = 1000.0
        print(f"configured RTT {rtt * ms:.1f} ms; load average {os.getloadavg()[0]:.2f}")
        print(f"first byte of a server that speaks first, after connect(): {first * ms:.2f} ms "
              "(a real network: 1 RTT)")
        print(f"1 connection, 50 ping-pongs: median {statistics.median(one) * ms:.2f} ms, "
              f"max {max(one) * ms:.2f} ms")
        print(f"{len(results)} connections at once ({wall:.2f} s): first byte median "
              f"{statistics.median(firsts) * ms:.2f} ms; 5 ping-pongs each: median "
              f"{statistics.median(many) * ms:.2f} ms, "
              f"p99 {many[int(0.99 * (len(many) - 1))] * ms:.2f} ms, max {many[-1] * ms:.2f} ms")
    finally:
        proc.terminate()
        proc.wait(5)
        listener.close()


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt", type=float, required=True, help="round-trip time, seconds")
    parser.add_argument("--listen", help="loopback addresses: A, A-B, or a comma list")
    parser.add_argument("--port", type=int, help="port to listen on (every address)")
    parser.add_argument("--upstream-port", type=int, help="the same address, this port")
    parser.add_argument("--selftest", action="store_true")
    parser.add_argument("--connections", type=int, default=1000, help="for --selftest")
    args = parser.parse_args()
    _raise_nofile()
    if args.selftest:
        selftest(args.rtt, args.connections)
        return
    if not (args.listen and args.port and args.upstream_port):
        parser.error("--listen, --port and --upstream-port are required")
    _prioritise()
    proxy = DelayProxy(args.rtt / 2, args.upstream_port)
    for address in _loopback_range(args.listen):
        proxy.listen(address, args.port)
    signal.signal(signal.SIGTERM, lambda *_: proxy.stop())
    signal.signal(signal.SIGINT, lambda *_: proxy.stop())
    print("ready", flush=True)
    proxy.run()


if __name__ == "__main__":
    main()
