"""CPU per connection, sshd and client, for each key exchange, host key and cipher fleetexec offers.

    python bench/algorithms.py                    # N=200, 3 repeats, every group; prints Markdown
    python bench/algorithms.py --save             # ... and writes results/DATE-algorithms.md
    python bench/algorithms.py --n 50 --repeats 1 --groups kex

One real OpenSSH sshd with three host keys (ed25519, ecdsa-sha2-nistp256, rsa-3072) serves N
loopback hosts; there is one known_hosts per key type (paramiko asks the server for the type
known_hosts holds). fleetexec runs `true` on the N hosts in this process
(`InProcessBackend`), with one algorithm forced at a time through FleetTransport's
`_preferred_kex/_preferred_keys/_preferred_ciphers/_preferred_macs` class attributes; the
others stay at the baseline (curve25519, ed25519, aes128-gcm). Each combination is first
run on 4 hosts with the negotiated algorithms recorded, and refused unless they are the
forced ones. Per measured run:

- client CPU: `getrusage(RUSAGE_SELF)` user+sys of this process (every session and
  transport thread; the driver idles meanwhile), per host;
- sshd CPU: utime+stime+cutime+cstime of the sshd listener from /proc after its connection
  processes have exited (bench.py's reading), per host: fork, re-exec, key exchange, auth,
  the session and `bash -c true`;
- load: the 1-minute load average before the run.

CPU time, not wall time, because the machine is shared. Combinations run interleaved (the
order rotates each repeat); cells are the median [min-max] over repeats. Optional
references, each its own process tree measured by bench.py's `measure`: OpenSSH `ssh`
(curve25519 forced as bench.py does, its default cipher) through `xargs -P 128`, and the
asyncssh peer. A second sshd with the ed25519 host key only shows what the extra host keys
cost the sshd on every connection (sshd re-executes itself and loads all its host keys per
connection). `--primitives` adds the client's cost of each algorithm's bare crypto.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench  # bench.py beside this file: /proc readings, measure() for subprocess peers
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import fleetexec
from fleetexec.backends.inprocess import InProcessBackend
from fleetexec.ssh.transport import FleetTransport
from fleetexec.testing.sshd import OpenSSHServer, addresses

RESULTS = Path(__file__).resolve().parent / "results"
BASE_KEX, BASE_KEY, BASE_CIPHER = "curve25519-sha256@libssh.org", "ssh-ed25519", \
    "aes128-gcm@openssh.com"
KEX = ["curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384",
       "ecdh-sha2-nistp521", "diffie-hellman-group14-sha256", "diffie-hellman-group16-sha512",
       "diffie-hellman-group-exchange-sha256"]
# host key algorithm -> the known_hosts key type that makes paramiko ask for it
HOST_KEYS = {"ssh-ed25519": "ssh-ed25519", "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
             "rsa-sha2-512": "ssh-rsa", "rsa-sha2-256": "ssh-rsa"}
CIPHERS: list[tuple[str, str | None]] = [
    ("aes128-gcm@openssh.com", None), ("aes256-gcm@openssh.com", None),
    ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
    ("aes128-ctr", "hmac-sha2-512-etm@openssh.com"),
    ("aes256-ctr", "hmac-sha2-256-etm@openssh.com"), ("aes128-ctr", "hmac-sha2-256"),
]
# --references: OpenSSH's ssh with each of these key exchanges (its default cipher)
SSH_KEX = {"ssh": "curve25519-sha256", "ssh-nistp256": "ecdh-sha2-nistp256"}
FORCED = ("_preferred_kex", "_preferred_keys", "_preferred_ciphers", "_preferred_macs")


@dataclass(frozen=True)
class Combo:
    """One forced choice; `None` in a field leaves FleetTransport's own preference."""

    kex: str | None = BASE_KEX
    key: str | None = BASE_KEY
    cipher: str | None = BASE_CIPHER
    mac: str | None = None
    known: str = "ssh-ed25519"  # the key type known_hosts holds
    sshd: str = "three"  # "three" host keys, or "one" (ed25519 only)
    label: str = ""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        cipher = f"{self.cipher} + {self.mac}" if self.mac else self.cipher
        return f"{self.kex} / {self.key} / {cipher}"


def combos(groups: list[str]) -> dict[str, list[Combo]]:
    """The combinations of each group; the baseline appears in each (measured once)."""
    table: dict[str, list[Combo]] = {}
    if "kex" in groups:
        table["kex"] = [Combo(kex=k) for k in KEX]
    if "hostkey" in groups:
        table["hostkey"] = [Combo(key=k, known=HOST_KEYS[k]) for k in HOST_KEYS]
    if "cipher" in groups:
        table["cipher"] = [Combo(cipher=c, mac=m) for c, m in CIPHERS]
    if "shipped" in groups:  # FleetTransport's own order, nothing forced, by known_hosts type
        table["shipped"] = [Combo(kex=None, key=None, cipher=None, known=t,
                                  label=f"as shipped, known_hosts holds {t}")
                            for t in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")]
    if "sshd" in groups:
        table["sshd"] = [Combo(), Combo(sshd="one", label="baseline, sshd with 1 host key")]
    return table


# ---- the fleet ---------------------------------------------------------------------------

def _write_key(path: Path, key: Any) -> str:
    """Write an unencrypted OpenSSH private key (0600); return its public line."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()))
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


class Fleet:
    """The sshd(s), one known_hosts and inventory per host key type, for N hosts."""

    def __init__(self, n: int, workdir: Path, stack: contextlib.ExitStack,
                 single_key_sshd: bool) -> None:
        self.n, self.dir = n, workdir
        self.addresses = addresses(n)
        sshd = OpenSSHServer(max_startups="4000:30:8000")
        self.public = {"ssh-ed25519": sshd.host_public_key.split()[1]}
        extra = {"ecdsa-sha2-nistp256": ("ecdsa", ec.generate_private_key(ec.SECP256R1())),
                 "ssh-rsa": ("rsa", rsa.generate_private_key(65537, 3072))}
        for key_type, (stem, key) in extra.items():
            path = sshd.dir / f"ssh_host_{stem}_key"
            self.public[key_type] = _write_key(path, key).split()[1]
            sshd.extra_config.append(f"HostKey {path}")
        self.sshds = {"three": stack.enter_context(sshd)}
        if single_key_sshd:
            self.sshds["one"] = stack.enter_context(OpenSSHServer(max_startups="4000:30:8000"))
        for server in self.sshds.values():
            assert server.pid is not None
            bench.SKIP_PIDS.add(server.pid)
        self._hosts: dict[tuple[str, str], list[fleetexec.Host]] = {}

    def known_hosts(self, sshd: str, key_type: str) -> Path:
        path = self.dir / f"known_hosts-{sshd}-{key_type}"
        if not path.exists():
            port = self.sshds[sshd].port
            b64 = (self.sshds["one"].host_public_key.split()[1] if sshd == "one"
                   else self.public[key_type])
            path.write_text("".join(f"[{a}]:{port} {key_type} {b64}\n" for a in self.addresses))
        return path

    def hosts(self, combo: Combo, n: int | None = None) -> list[fleetexec.Host]:
        """The first `n` hosts, trusting `combo.known` keys (an inventory, loaded once)."""
        index = (combo.sshd, combo.known)
        if index not in self._hosts:
            inventory = self.dir / f"inventory-{combo.sshd}-{combo.known}.yaml"
            kh = self.known_hosts(combo.sshd, combo.known)
            sshd = self.sshds[combo.sshd]
            sshd.write_inventory(inventory, self.addresses, known_hosts=self.dir / "scratch-kh")
            text = inventory.read_text().replace(str(self.dir / "scratch-kh"), str(kh))
            inventory.write_text(text)
            self._hosts[index] = list(fleetexec.load_inventory(inventory).select())
        return self._hosts[index][:n]

    def sshd_pid(self, combo: Combo) -> int:
        pid = self.sshds[combo.sshd].pid
        assert pid is not None
        return pid


# ---- forcing and checking algorithms -----------------------------------------------------

@contextlib.contextmanager
def forced(combo: Combo) -> Iterator[None]:
    """FleetTransport offers only `combo`'s algorithms (the fields that are set)."""
    saved = {name: FleetTransport.__dict__.get(name) for name in FORCED}
    wanted = dict(zip(FORCED, (combo.kex, combo.key, combo.cipher, combo.mac), strict=True))
    try:
        for name, value in wanted.items():
            if value is not None:
                setattr(FleetTransport, name, (value,))
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                with contextlib.suppress(AttributeError):
                    delattr(FleetTransport, name)
            else:
                setattr(FleetTransport, name, value)


@contextlib.contextmanager
def recording(into: Counter[tuple[str, str, str, str]]) -> Iterator[None]:
    """Count what each connection negotiated (kex, host key, cipher, MAC) while inside."""
    names = {cls: name for name, cls in FleetTransport._kex_info.items()}  # type: ignore[attr-defined]
    original = FleetTransport._activate_outbound  # type: ignore[attr-defined]

    def record(self: FleetTransport) -> None:
        info = self._cipher_info[self.local_cipher]  # type: ignore[attr-defined]
        mac = "(aead)" if info.get("is_aead") else self.local_mac  # type: ignore[attr-defined]
        into[(names.get(type(self.kex_engine), "?"), self.host_key_type,  # type: ignore[attr-defined]
              self.local_cipher, mac)] += 1  # type: ignore[attr-defined]
        original(self)

    FleetTransport._activate_outbound = record  # type: ignore[attr-defined,method-assign]
    try:
        yield
    finally:
        FleetTransport._activate_outbound = original  # type: ignore[attr-defined,method-assign]


def run_fleet(hosts: list[fleetexec.Host]) -> fleetexec.FleetResult:
    return fleetexec.run(hosts, "true", system_known_hosts=False, command_timeout=120,
                         connect_timeout=60, backend=InProcessBackend())


def negotiated(fleet: Fleet, combo: Combo) -> str:
    """Run `combo` on 4 hosts; return what they negotiated, or raise if not what was forced."""
    seen: Counter[tuple[str, str, str, str]] = Counter()
    with forced(combo), recording(seen):
        result = run_fleet(fleet.hosts(combo, 4))
    bad = [f"{r.host}: {r.status} {r.error}" for r in result.values() if not r.ok]
    if bad or len(seen) != 1:
        raise SystemExit(f"{combo.name}: failed or mixed: {bad} {dict(seen)}")
    got = next(iter(seen))
    expected = (combo.kex, combo.key, combo.cipher, combo.mac or "(aead)")
    if any(e is not None and e != g for e, g in zip(expected, got, strict=True)):
        raise SystemExit(f"{combo.name}: negotiated {got}, not {expected}")
    return " / ".join(got)


# ---- measuring --------------------------------------------------------------------------

def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_combo(fleet: Fleet, combo: Combo) -> dict[str, Any]:
    """One measured run of `combo` on all N hosts: CPU per host of this process and the sshd."""
    hosts, pid = fleet.hosts(combo), fleet.sshd_pid(combo)
    with forced(combo):
        bench.wait_sshd_idle(pid)
        load = os.getloadavg()[0]
        sshd0, cpu0, busy0, wall0 = bench.process_cpu(pid), _self_cpu(), bench.machine_busy(), \
            time.perf_counter()
        result = run_fleet(hosts)
        wall, cpu = time.perf_counter() - wall0, _self_cpu() - cpu0
        bench.wait_sshd_idle(pid)
        sshd = bench.process_cpu(pid) - sshd0
    ok = sum(r.ok for r in result.values())
    return {"combo": combo.name, "n": len(hosts), "ok": ok, "wall": round(wall, 3),
            "client_cpu": round(cpu, 4), "sshd_cpu": round(sshd, 3), "load1": round(load, 2),
            "machine_cpu": round(bench.machine_busy() - busy0, 2)}


def measure_peer(fleet: Fleet, peer: str) -> dict[str, Any]:
    """One run of a subprocess reference peer (its process tree), via bench.measure."""
    combo = Combo()
    pid = fleet.sshd_pid(combo)
    sshd = fleet.sshds["three"]
    kh, n = fleet.known_hosts("three", "ssh-ed25519"), fleet.n
    hosts_file = fleet.dir / "hosts.txt"
    hosts_file.write_text("\n".join(fleet.addresses) + "\n")
    if peer.startswith("ssh"):
        kex = SSH_KEX[peer]
        argv = ["xargs", "-P", str(bench.CONCURRENCY), "-a", str(hosts_file), "-I", "{}", "sh",
                "-c", bench.SSH_WRAPPER, "sh", "{}", "true",
                "-o", f"KexAlgorithms={kex}", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={kh}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=60",
                "-i", str(sshd.client_key_path), "-F", "/dev/null", "-p", str(sshd.port),
                "-l", sshd.user]
    else:
        argv = [sys.executable, str(bench.PEERS_DIR / "peer_asyncssh.py"), "--hosts",
                str(hosts_file), "--port", str(sshd.port), "--user", sshd.user, "--key",
                str(sshd.client_key_path), "--known-hosts", str(kh), "--concurrency",
                str(bench.CONCURRENCY), "--command", "true"]
    load = os.getloadavg()[0]
    work = fleet.dir / f"peer-{peer}"
    work.mkdir(exist_ok=True)
    got = bench.measure(argv, pid, work)
    ok, _errors = bench.parse_outcome("xargs-ssh" if peer.startswith("ssh") else "asyncssh", work,
                                      n)
    return {"combo": f"reference: {peer}", "n": n, "ok": ok, "wall": got["wall"],
            "client_cpu": got["cpu"], "sshd_cpu": got["sshd_cpu"], "load1": round(load, 2),
            "machine_cpu": None}


# ---- bare crypto, client side --------------------------------------------------------------

def primitives() -> list[tuple[str, float]]:
    """CPU ms of each algorithm's client-side crypto alone (process time, best of 5)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, x25519
    from paramiko.kex_group14 import KexGroup14SHA256
    from paramiko.kex_group16 import KexGroup16SHA512

    def best(fn: Callable[[], object], number: int) -> float:
        timer = timeit.Timer(fn, timer=time.process_time)
        return min(timer.repeat(5, number)) / number * 1000

    out: list[tuple[str, float]] = []
    peer_x = x25519.X25519PrivateKey.generate().public_key()
    out.append(("curve25519: keygen + exchange", best(
        lambda: x25519.X25519PrivateKey.generate().exchange(peer_x), 200)))
    for curve in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()):
        peer = ec.generate_private_key(curve).public_key()
        out.append((f"ecdh {curve.name}: keygen + exchange", best(
            lambda c=curve, p=peer: ec.generate_private_key(c).exchange(ec.ECDH(), p), 50)))
    for kex, bits in ((KexGroup14SHA256, 2048), (KexGroup16SHA512, 4096)):
        p, g = kex.P, kex.G
        x = int.from_bytes(os.urandom(bits // 8), "big") % p  # paramiko: x < (p-1)/2
        f = int.from_bytes(os.urandom(bits // 8), "big") % p  # the server's half
        out.append((f"DH {bits}-bit: e = g^x and K = f^x mod p, Python pow()", best(
            lambda p=p, g=g, x=x, f=f: (pow(g, x, p), pow(f, x, p)), 2)))
    data = os.urandom(32)
    for name, key, verify in (
        ("ed25519", ed25519.Ed25519PrivateKey.generate(),
         lambda k, s: k.public_key().verify(s, data)),
        ("ecdsa p256", ec.generate_private_key(ec.SECP256R1()),
         lambda k, s: k.public_key().verify(s, data, ec.ECDSA(hashes.SHA256()))),
        ("rsa-3072 sha2-512", rsa.generate_private_key(65537, 3072),
         lambda k, s: k.public_key().verify(s, data, padding.PKCS1v15(), hashes.SHA512())),
    ):
        if name.startswith("rsa"):
            sig = key.sign(data, padding.PKCS1v15(), hashes.SHA512())
        elif name.startswith("ecdsa"):
            sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
        else:
            sig = key.sign(data)
        out.append((f"host key verify, {name}", best(lambda k=key, s=sig, v=verify: v(k, s),
                                                      100)))
    with contextlib.suppress(ImportError):
        from cryptography.hazmat.primitives.asymmetric import mlkem  # type: ignore[attr-defined]

        def hybrid() -> None:
            secret = mlkem.MLKEM768PrivateKey.generate()
            _ct = secret.public_key().encapsulate()
            x25519.X25519PrivateKey.generate().exchange(peer_x)
        out.append(("mlkem768x25519 (keygen+encap here, ~ client's keygen+decap)",
                    best(hybrid, 100)))
    return out


# ---- the report ---------------------------------------------------------------------------

def _cell(values: list[float], scale: float) -> str:
    values = [v * scale for v in values]
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.2f}"
    return f"{median:.2f} [{min(values):.2f}–{max(values):.2f}]"


def report(meta: dict[str, Any], groups: dict[str, list[Combo]], records: list[dict[str, Any]],
           prims: list[tuple[str, float]]) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by.setdefault(record["combo"], []).append(record)
    loads = [r["load1"] for r in records]
    lines = [f"<!-- {meta['argv']} -->",
             f"# Algorithms: CPU per connection, sshd and client ({meta['date']})", "",
             f"One OpenSSH sshd ({meta['openssh']}) with ed25519, ecdsa-p256 and rsa-3072 host "
             f"keys; N={meta['n']} loopback hosts per run, `true`; fleetexec "
             f"{meta['git']} in-process (paramiko {meta['paramiko']}, cryptography "
             f"{meta['cryptography']}, Python {meta['python']}), {meta['nproc']} cores. "
             "Median [min–max] over "
             f"{meta['repeats']} repeats, combinations interleaved. Client CPU: this process "
             "(every thread), per host; sshd CPU: the listener with its reaped connection "
             "processes (fork, re-exec, kex, auth, session, `bash -c true`), per host. "
             f"Machine shared with other benchmarks: 1-min load average {min(loads):.1f}–"
             f"{max(loads):.1f} (median {statistics.median(loads):.1f}) at run starts; "
             f"`uptime` at start: {meta['uptime'][0]}; at end: {meta['uptime'][-1]}.", ""]
    titles = {"kex": "Key exchange (host key ssh-ed25519, cipher aes128-gcm)",
              "hostkey": "Host key (kex curve25519, cipher aes128-gcm; known_hosts holds the type)",
              "cipher": "Cipher and MAC (kex curve25519, host key ssh-ed25519)",
              "shipped": "FleetTransport's own preferences (nothing forced)",
              "sshd": "The sshd's host keys (what every connection loads)"}
    for group, items in groups.items():
        lines += [f"## {titles[group]}", "",
                  "| combination (negotiated: kex / host key / cipher / MAC) | sshd CPU ms/conn |"
                  " client CPU ms/conn | hosts ok | load |", "|---|---|---|---|---|"]
        for combo in items:
            runs = by.get(combo.name, [])
            if not runs:
                continue
            name = meta["negotiated"].get(combo.name, combo.name)
            ok = "/".join(sorted({f"{r['ok']}/{r['n']}" for r in runs}))
            lines.append(
                f"| {name} | {_cell([r['sshd_cpu'] / r['n'] for r in runs], 1000)} | "
                f"{_cell([r['client_cpu'] / r['n'] for r in runs], 1000)} | {ok} | "
                f"{statistics.median(r['load1'] for r in runs):.1f} |")
        lines.append("")
    peers = [k for k in by if k.startswith("reference: ")]
    if peers:
        lines += ["## References (own process tree each, start-up included; host key ed25519)",
                  "", "| client | sshd CPU ms/conn | client CPU ms/conn | hosts ok | load |",
                  "|---|---|---|---|---|"]
        for key in peers:
            runs = by[key]
            ok = "/".join(sorted({f"{r['ok']}/{r['n']}" for r in runs}))
            lines.append(f"| {meta['negotiated'].get(key, key)} | "
                         f"{_cell([r['sshd_cpu'] / r['n'] for r in runs], 1000)} | "
                         f"{_cell([r['client_cpu'] / r['n'] for r in runs], 1000)} | {ok} | "
                         f"{statistics.median(r['load1'] for r in runs):.1f} |")
        lines.append("")
    if prims:
        lines += ["## Client-side crypto alone (CPU ms, best of 5, this process)", "",
                  "| operation | ms |", "|---|---|"]
        lines += [f"| {name} | {ms:.3f} |" for name, ms in prims]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--groups", default="kex,hostkey,cipher,shipped,sshd",
                        help="comma list of kex, hostkey, cipher, shipped, sshd")
    parser.add_argument("--references", default="ssh,asyncssh",
                        help="comma list of ssh, ssh-nistp256, asyncssh (subprocess peers); "
                             "'' for none")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="only combinations whose name contains TEXT (repeatable)")
    parser.add_argument("--primitives", action="store_true", help="also time the bare crypto")
    parser.add_argument("--json", metavar="FILE", help="append raw records (JSON lines)")
    parser.add_argument("--save", action="store_true", help="write results/DATE-algorithms.md")
    args = parser.parse_args()
    groups = combos([g.strip() for g in args.groups.split(",") if g.strip()])
    if args.only:
        groups = {g: kept for g, items in groups.items()
                  if (kept := [c for c in items if any(t in c.name for t in args.only)])}
    references = [p.strip() for p in args.references.split(",") if p.strip()]
    unique = list({c.name: c for items in groups.values() for c in items}.values())
    ctypes.CDLL(None, use_errno=True).prctl(bench.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    import cryptography
    import paramiko

    meta: dict[str, Any] = {
        "argv": "python bench/algorithms.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "n": args.n, "repeats": args.repeats,
        "openssh": bench._output(["ssh", "-V"]).split(",")[0],
        "git": bench._output(["git", "-C", str(RESULTS.parent.parent), "describe", "--always",
                              "--dirty"]),
        "paramiko": paramiko.__version__, "cryptography": cryptography.__version__,
        "python": sys.version.split()[0], "nproc": os.cpu_count(), "negotiated": {},
        "uptime": [bench._output(["uptime"])]}
    records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack, open(args.json or os.devnull, "a") as jsonl:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleetexec-algos-")))
        fleet = Fleet(args.n, tmp, stack, single_key_sshd="sshd" in groups)
        for combo in unique:  # also warms up: imports, page cache
            meta["negotiated"][combo.name] = negotiated(fleet, combo)
            print(f"{combo.name}: {meta['negotiated'][combo.name]}", file=sys.stderr, flush=True)
        for peer in (p for p in references if p in SSH_KEX):
            meta["negotiated"][f"reference: {peer}"] = (
                f"OpenSSH ssh via xargs -P 128: {SSH_KEX[peer]} / ssh-ed25519 / "
                "chacha20-poly1305 (its default)")
        if "asyncssh" in references:
            meta["negotiated"]["reference: asyncssh"] = (
                "asyncssh, 128 in flight: " + _probe_asyncssh(fleet))
        plan: list[Combo | str] = [*unique, *references]
        for repeat in range(args.repeats):
            shift = repeat % len(plan)
            for index, item in enumerate(plan[shift:] + plan[:shift], 1):
                record = (measure_peer(fleet, item) if isinstance(item, str)
                          else measure_combo(fleet, item))
                record["repeat"] = repeat
                records.append(record)
                jsonl.write(json.dumps(record) + "\n")
                jsonl.flush()
                print(f"[{repeat + 1}/{args.repeats} {index}/{len(plan)}] {record['combo']}: "
                      f"sshd {record['sshd_cpu'] / record['n'] * 1000:.2f} ms/conn, client "
                      f"{record['client_cpu'] / record['n'] * 1000:.2f} ms/conn, ok "
                      f"{record['ok']}/{record['n']}, load {record['load1']}",
                      file=sys.stderr, flush=True)
    meta["uptime"].append(bench._output(["uptime"]))
    prims = primitives() if args.primitives else []
    text = report(meta, groups, records, prims)
    print(text)
    if args.save:
        out = RESULTS / f"{meta['date']}-algorithms.md"
        out.write_text(text + "\n")
        print(f"written: {out}", file=sys.stderr)


def _probe_asyncssh(fleet: Fleet) -> str:
    """What asyncssh negotiates with this sshd (peers/probe_kex.py's asyncssh probe)."""
    sshd = fleet.sshds["three"]
    hosts_file = fleet.dir / "hosts.txt"
    hosts_file.write_text("\n".join(fleet.addresses) + "\n")
    argv = [sys.executable, "-c", PROBE, "--hosts", str(hosts_file), "--port", str(sshd.port),
            "--user", sshd.user, "--key", str(sshd.client_key_path), "--known-hosts",
            str(fleet.known_hosts("three", "ssh-ed25519")), "--command", "true"]
    import subprocess

    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          cwd=bench.PEERS_DIR, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(bench.PEERS_DIR), os.environ.get("PYTHONPATH", "")])})
    return done.stdout.strip() or "probe failed: " + " ".join(done.stderr[-200:].split())


PROBE = """
import asyncio, sys
import asyncssh
from peer_common import parse_args, read_hosts
args = parse_args("")
chosen = {}
choose = asyncssh.connection.SSHConnection._choose_alg
def record(self, alg_type, *rest):
    chosen[alg_type] = choose(self, alg_type, *rest)
    return chosen[alg_type]
asyncssh.connection.SSHConnection._choose_alg = record
async def main():
    async with asyncssh.connect(read_hosts(args.hosts)[0], args.port, username=args.user,
                                client_keys=[args.key], known_hosts=args.known_hosts,
                                agent_path=None, config=[]) as conn:
        kex = chosen.get("key exchange", b"?").decode()
        key = conn.get_server_host_key().get_algorithm()
        key = key.decode() if isinstance(key, bytes) else key
        print(f"{kex} / {key} / {conn.get_extra_info('send_cipher')} / "
              f"{conn.get_extra_info('send_mac') or '(aead)'}")
asyncio.run(main())
"""

if __name__ == "__main__":
    main()
