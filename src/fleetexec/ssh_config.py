"""The OpenSSH client configuration (ssh_config(5)), read the way `ssh` reads it.

Pure standard library, imported by the parent process (which never imports
paramiko): `resolve.py` looks each host up here, by the name it was given.
The rules are OpenSSH 9's, checked against `ssh -G` by tests/test_ssh_config.py:

* files: `~/.ssh/config` then `/etc/ssh/ssh_config`, or one `-F` file (`none`: no
  file). `~/.ssh/config` and every included file must not be writable by others
  (ssh refuses them too: they can run commands through `Match exec`).
* lines: keywords case-insensitive, `key value` or `key=value`, double or single
  quotes, `#` comments; for each keyword the first value obtained wins, except
  `IdentityFile` and `CertificateFile`, which accumulate.
* `Host` patterns (`*`, `?`, `!negation`, several separated by spaces) match the
  name as given, case-sensitively; `Match` takes `all`, `host`, `originalhost`,
  `user`, `localuser`, `exec`, `canonical` and `final` (comma lists, `!`), and
  `Match final` makes a second pass, as ssh does, in which `Host` patterns match
  the final host name and `canonical` matches too (no DNS canonicalisation is done).
* `Include` with globs, relative paths under `~/.ssh` (user files) or `/etc/ssh`.
* tokens (`%h %p %r %u %d %% %n %l %L %C %i %k`) and `${VAR}` where OpenSSH
  expands them, and `~`.

`Match exec` runs its command as ssh does, `/bin/sh -c COMMAND` with the tokens
expanded, stdin and stdout on /dev/null; only commands written in the
configuration files are ever run, each distinct command once per lookup session
(`SshConfig`), bounded by `EXEC_TIMEOUT` seconds (a command still running then is
killed and counts as "no match", with a note). A non-zero exit is "no match".
"""

from __future__ import annotations

import contextlib
import glob
import grp
import hashlib
import os
import pwd
import signal
import socket
import stat
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .exceptions import ConfigError
from .patterns import match_list

__all__ = ["DEFAULT_IDENTITY_FILES", "EXEC_TIMEOUT", "HostConfig", "SshConfig",
           "default_config_files", "identity_file_problem", "public_key_blob"]

USER_CONFIG = "~/.ssh/config"
SYSTEM_CONFIG = "/etc/ssh/ssh_config"
# What `ssh -G` lists when no IdentityFile is configured, in its order (OpenSSH 9.2);
# id_xmss and id_dsa are left out: paramiko reads neither.
DEFAULT_IDENTITY_FILES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk",
                          "~/.ssh/id_ed25519", "~/.ssh/id_ed25519_sk")
EXEC_TIMEOUT = 10.0
_MAX_DEPTH = 16  # OpenSSH's READCONF_MAX_DEPTH for Include
_MAX_BYTES = 1 << 20
_MAX_IDENTITY_FILES = 100
_WHITESPACE = " \t\r\n"

# Keywords whose values fleetexec uses (the keys of `HostConfig.where`).
HONOURED = frozenset({
    "hostname", "user", "port", "identityfile", "identitiesonly", "identityagent",
    "connecttimeout", "userknownhostsfile", "globalknownhostsfile", "stricthostkeychecking",
    "hostkeyalias", "checkhostip", "serveraliveinterval", "serveralivecountmax",
    "addressfamily", "proxyjump", "proxycommand"})
# Keywords that would change what happens, which fleetexec does not do: noted once per
# run. The function says whether the value is one that matters (`no` usually does not).


def _NOT_NO(value: str) -> bool:  # noqa: N802 - reads as a constant in the table below
    return value.lower() not in ("no", "false", "none")


_NOTED: dict[str, tuple[Callable[[str], bool], str]] = {
    "localforward": (bool, "no port is forwarded"),
    "remoteforward": (bool, "no port is forwarded"),
    "dynamicforward": (bool, "no port is forwarded"),
    "remotecommand": (bool, "the command you give fleetexec runs, not this one"),
    "requesttty": (lambda v: v.lower() in ("yes", "force", "true"),
                   "commands run without a terminal"),
    "forwardagent": (_NOT_NO, "fleetexec never forwards the agent"),
    "forwardx11": (_NOT_NO, "no X11 forwarding"),
    "localcommand": (bool, "no local command is run"),
    "permitlocalcommand": (_NOT_NO, "no local command is run"),
    "certificatefile": (bool, "certificates are not offered; only keys"),
    "pkcs11provider": (_NOT_NO, "PKCS#11 keys are not offered"),
    "controlmaster": (_NOT_NO, "each run makes its own connections (see --persist)"),
    "controlpath": (_NOT_NO, "an existing master connection is not used (see --persist)"),
    "controlpersist": (_NOT_NO, "each run makes its own connections (see --persist)"),
    "canonicalizehostname": (_NOT_NO, "host names are used as written, not canonicalised"),
    "setenv": (bool, "no environment variable is sent"),
    "tunnel": (_NOT_NO, "no tunnel device is opened"),
    "sessiontype": (lambda v: v.lower() != "default", "the command runs in a session"),
    "pubkeyauthentication": (lambda v: not _NOT_NO(v), "keys are still offered"),
    "hostbasedauthentication": (_NOT_NO, "host-based authentication is not used"),
    "preferredauthentications": (bool, "keys are tried first, then a password if given"),
    "knownhostscommand": (bool, "the command is not run; its keys are not trusted"),
    "revokedhostkeys": (bool, "this revocation list is not read (known_hosts @revoked is)"),
    "verifyhostkeydns": (_NOT_NO, "SSHFP records are not consulted"),
    "bindaddress": (bool, "the system picks the source address"),
    "bindinterface": (bool, "the system picks the source address"),
    "connectionattempts": (lambda v: v != "1", "one attempt (see --retries)"),
    "nohostauthenticationforlocalhost": (_NOT_NO, "localhost's key is checked like any other"),
    "ciphers": (bool, "paramiko's algorithm choice is used"),
    "macs": (bool, "paramiko's algorithm choice is used"),
    "kexalgorithms": (bool, "paramiko's algorithm choice is used"),
    "hostkeyalgorithms": (bool, "paramiko's algorithm choice is used"),
    "pubkeyacceptedalgorithms": (bool, "paramiko's algorithm choice is used"),
    "pubkeyacceptedkeytypes": (bool, "paramiko's algorithm choice is used"),
    "casignaturealgorithms": (bool, "paramiko's algorithm choice is used"),
    "requiredrsasize": (bool, "paramiko's key size rules are used"),
}
# Known keywords that change nothing fleetexec does (or that Debian's ssh_config sets
# everywhere and that cannot matter here): read and ignored without a word.
_QUIET = frozenset({
    "addkeystoagent", "batchmode", "canonicaldomains", "canonicalizefallbacklocal",
    "canonicalizemaxdots", "canonicalizepermittedcnames", "challengeresponseauthentication",
    "channeltimeout", "clearallforwardings", "compression", "enableescapecommandline",
    "enablesshkeysign", "escapechar", "exitonforwardfailure", "fingerprinthash",
    "forkafterauthentication", "forwardx11timeout", "forwardx11trusted", "gatewayports",
    "gssapiauthentication", "gssapiclientidentity", "gssapidelegatecredentials",
    "gssapikeyexchange", "gssapikexalgorithms", "gssapirenewalforcesrekey",
    "gssapiserveridentity", "gssapitrustdns", "hashknownhosts", "hostbasedacceptedalgorithms",
    "hostbasedkeytypes", "ignoreunknown", "ipqos", "kbdinteractiveauthentication",
    "kbdinteractivedevices", "loglevel", "logverbose", "numberofpasswordprompts",
    "obscurekeystroketiming", "passwordauthentication", "permitremoteopen", "protocol",
    "proxyusefdpass", "rekeylimit", "securitykeyprovider", "sendenv", "stdinnull",
    "streamlocalbindmask", "streamlocalbindunlink", "syslogfacility", "tag", "tcpkeepalive",
    "tunneldevice", "updatehostkeys", "usekeychain", "visualhostkey", "xauthlocation",
    "warnweakcrypto", "versionaddendum", "refuseconnection",
    # deprecated or unsupported in OpenSSH itself, which ignores them too
    "afstokenpassing", "cipher", "compressionlevel", "dsaauthentication", "fallbacktorsh",
    "globalknownhostsfile2", "kerberosauthentication", "kerberostgtpassing",
    "rhostsauthentication", "rhostsrsaauthentication", "rsaauthentication",
    "skeyauthentication", "smartcarddevice", "tisauthentication", "usedns", "useprivilegedport",
    "useroaming", "usersh", "userknownhostsfile2",
})
_FLAGS = {"yes": True, "true": True, "no": False, "false": False}
_STRICT = {"yes": "yes", "true": "yes", "no": "no", "false": "no", "off": "no", "ask": "ask",
           "accept-new": "accept-new"}
_FAMILIES = ("any", "inet", "inet6")
# Tokens each keyword expands (ssh_config(5) TOKENS, OpenSSH 9.2).
_ALL_TOKENS = frozenset("%CdhiLlnprku")
_HOSTNAME_TOKENS = frozenset("%h")
_PROXY_TOKENS = frozenset("%hnpr")


def default_config_files(path: str | None = None,
                         use: bool = True) -> tuple[tuple[str, bool, bool], ...]:
    """The files `ssh` reads, as `(path, user file, check permissions)`.

    `path` is `-F`: it replaces both (`none`: no file), as with `ssh -F`.
    """
    if not use:
        return ()
    if path is not None:
        return () if path == "none" else ((os.path.abspath(os.path.expanduser(path)), True,
                                          False),)
    return ((os.path.expanduser(USER_CONFIG), True, True), (SYSTEM_CONFIG, False, False))


@dataclass(frozen=True)
class _Line:
    path: str
    number: int
    keyword: str
    args: tuple[str, ...]
    rest: str  # the raw text after the keyword (Match and ProxyCommand read it)

    @property
    def where(self) -> str:
        return f"{_shown(self.path)} line {self.number}"


@dataclass(frozen=True)
class _Presets:
    """Values a stronger source set: like `ssh -l USER -p PORT -o HostName=HOST`."""

    user: str | None = None
    port: int | None = None
    hostname: str | None = None


@dataclass
class _Values:
    """What one lookup has collected so far: first value of each keyword wins."""

    first: dict[str, _Line] = field(default_factory=dict)
    identity_files: list[_Line] = field(default_factory=list)
    others: list[_Line] = field(default_factory=list)  # noted keywords, each as found
    jump: _Line | None = None
    proxy_command: _Line | None = None
    unknown: list[_Line] = field(default_factory=list)


@dataclass(frozen=True)
class HostConfig:
    """What the ssh configuration says for one host (values from the files only).

    A field is `None` when the configuration does not set it, or when a
    stronger source preset it (`lookup`'s arguments). `where` names the file
    and line each honoured value came from. `notes` are one-line remarks on
    what the configuration asks and fleetexec does not do.
    """

    name: str
    hostname: str  # where ssh would connect: HostName (%h expanded, lower-cased) or the name
    user: str | None = None
    port: int | None = None
    address: str | None = None  # HostName, when the configuration set it
    identity_files: tuple[str, ...] = ()  # expanded, absolute, in order, duplicates dropped
    identities_only: bool | None = None
    identity_agent: str | None = None  # "none", "SSH_AUTH_SOCK", "$VAR" or a path
    connect_timeout: int | None = None
    user_known_hosts_files: tuple[str, ...] | None = None  # () for "none"
    global_known_hosts_files: tuple[str, ...] | None = None
    strict_host_key_checking: str | None = None  # yes, no, ask or accept-new
    host_key_alias: str | None = None
    check_host_ip: bool | None = None
    server_alive_interval: int | None = None
    server_alive_count_max: int | None = None
    address_family: str | None = None  # any, inet or inet6
    proxy_jump: str | None = None  # set and not "none"
    proxy_command: str | None = None
    where: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


class SshConfig:
    """The configuration files, parsed once, looked up for any number of hosts.

    `files` as `default_config_files` makes them. Files are read when first
    needed and kept for the life of this object (one `resolve()` call), as are
    the results of `Match exec` commands. Raises `ConfigError` naming the file
    and line for what ssh would refuse.
    """

    def __init__(self, files: Iterable[tuple[str, bool, bool]] = (), *,
                 exec_timeout: float = EXEC_TIMEOUT) -> None:
        self.files = tuple(files)
        self.exec_timeout = exec_timeout
        self._parsed: dict[str, list[_Line] | None] = {}
        self._exec: dict[str, bool] = {}
        self._exec_notes: list[str] = []
        self._account = pwd.getpwuid(os.getuid())
        self._thishost = socket.gethostname()

    def lookup(self, name: str, *, user: str | None = None, port: int | None = None,
               hostname: str | None = None, default_user: str | None = None) -> HostConfig:
        """The configuration for host `name` (the name as given, `%n`).

        `user`, `port` and `hostname` are values a stronger source already set
        (the target, a flag, the inventory): they act like `ssh -l`, `-p` and
        `-o HostName=`, so the files cannot change them and `Match` and the
        tokens see them. `default_user` is the remote user when nobody sets
        one (the local user).
        """
        values = _Values()
        presets = _Presets(user, port, hostname)
        final = self._pass(name, name, values, presets, final=False)
        host = _final_hostname(name, values, hostname)
        if final:
            self._pass(host, name, values, presets, final=True, hostname=host)
        return self._finish(name, host, values, presets, default_user or self._account.pw_name)

    # ---- reading ---------------------------------------------------------------------------

    def _lines(self, path: str, check: bool) -> list[_Line] | None:
        """The parsed lines of `path`, or None if it does not exist."""
        if path not in self._parsed:
            self._parsed[path] = _read(path, check, self._account)
        return self._parsed[path]

    def _pass(self, host: str, original: str, values: _Values, presets: _Presets, *,
              final: bool, hostname: str | None = None) -> bool:
        """One reading of every file; True if some `Match final` asks for a second one."""
        state = _Pass(self, host, original, values, presets, final, hostname)
        for path, user_file, check in self.files:
            lines = self._lines(path, check)
            if lines is None:
                if not user_file or check:  # ~/.ssh/config and the system file may be missing
                    continue
                raise ConfigError(f"cannot read ssh config {path}: no such file")
            state.run(lines, user_file, active=True, never=False, depth=0)
        return state.want_final

    # ---- values ----------------------------------------------------------------------------

    def _finish(self, name: str, host: str, values: _Values, presets: _Presets,
                default_user: str) -> HostConfig:
        first = values.first
        where = {k: line.where for k, line in first.items() if k in HONOURED}
        out: dict[str, object] = {}
        notes: list[str] = [*self._exec_notes]
        self._exec_notes.clear()
        if "hostname" in first and presets.hostname is None:
            out["address"] = host
        elif "hostname" in where:
            del where["hostname"]
        if "user" in first and presets.user is None:
            out["user"] = _single(first["user"])
        else:
            where.pop("user", None)
        config_port = _port(first["port"]) if "port" in first else None
        if config_port is not None and presets.port is None:
            out["port"] = config_port
        else:
            where.pop("port", None)
        user = presets.user or (_single(first["user"]) if "user" in first else default_user)
        port = presets.port or config_port or 22
        alias = _single(first["hostkeyalias"]).lower() if "hostkeyalias" in first else None
        tokens = self._tokens(host=host, original=name, port=port, user=user, alias=alias)
        files: list[str] = []
        for line in values.identity_files:
            path = _path(_single(line), tokens, line)
            if path not in files:
                files.append(path)
        if files:
            out["identity_files"] = tuple(files)
            where["identityfile"] = values.identity_files[0].where
        if "identitiesonly" in first:
            out["identities_only"] = _flag(first["identitiesonly"])
        if "checkhostip" in first:
            out["check_host_ip"] = _flag(first["checkhostip"])
        if "identityagent" in first:
            line = first["identityagent"]
            agent = _single(line)
            out["identity_agent"] = agent if agent in ("none", "SSH_AUTH_SOCK") or (
                agent.startswith("$") and not agent.startswith("${")) else _path(agent, tokens,
                                                                                 line)
        if "connecttimeout" in first:
            out["connect_timeout"] = _seconds(first["connecttimeout"])
        if "userknownhostsfile" in first:
            line = first["userknownhostsfile"]
            out["user_known_hosts_files"] = () if line.args[0].lower() == "none" else tuple(
                _path(arg, tokens, line) for arg in line.args)
        if "globalknownhostsfile" in first:
            line = first["globalknownhostsfile"]  # used as written: no ~, no tokens (as ssh)
            out["global_known_hosts_files"] = () if line.args[0].lower() == "none" else tuple(
                os.path.abspath(arg) for arg in line.args)
        if "stricthostkeychecking" in first:
            out["strict_host_key_checking"] = _choice(first["stricthostkeychecking"], _STRICT)
        if alias is not None:
            out["host_key_alias"] = alias
        if "serveraliveinterval" in first:
            out["server_alive_interval"] = _seconds(first["serveraliveinterval"])
        if "serveralivecountmax" in first:
            out["server_alive_count_max"] = _integer(first["serveralivecountmax"])
        if "addressfamily" in first:
            out["address_family"] = _choice(first["addressfamily"],
                                            {f: f for f in _FAMILIES})
        if values.jump is not None and values.jump.args[0].lower() != "none":
            out["proxy_jump"] = _expand(values.jump.args[0], tokens, _PROXY_TOKENS, values.jump)
            where["proxyjump"] = values.jump.where
        if values.proxy_command is not None and values.proxy_command.rest.lower() != "none":
            out["proxy_command"] = values.proxy_command.rest
            where["proxycommand"] = values.proxy_command.where
        for line in values.others:
            value = " ".join(line.args)
            test, consequence = _NOTED[line.keyword]
            if test(value):
                notes.append(f"{line.where}: {line.keyword} {value} is not supported; "
                             f"{consequence}")
        ignore = values.first.get("ignoreunknown")
        for line in values.unknown:
            if ignore is None or _pattern_list(line.keyword, ignore.args[0].lower()) != 1:
                notes.append(f"{line.where}: unknown keyword {line.keyword!r} ignored")
        return HostConfig(name=name, hostname=host, where=where, notes=tuple(notes),
                          **out)  # type: ignore[arg-type]

    def _tokens(self, *, host: str, original: str, port: int, user: str,
                alias: str | None) -> dict[str, str]:
        account = self._account
        return {
            "%": "%", "C": hashlib.sha1(  # noqa: S324 - OpenSSH's %C, a name, not security
                f"{self._thishost}{host}{port}{user}".encode()).hexdigest(),
            "d": os.path.expanduser("~"), "h": host, "i": str(os.getuid()),
            "k": alias or original, "L": self._thishost.split(".")[0],
            "l": self._thishost, "n": original, "p": str(port), "r": user,
            "u": account.pw_name,
        }

    def run_exec(self, command: str, line: _Line) -> bool:
        """`Match exec`: True if `command` exits 0 (cached per distinct command)."""
        if command not in self._exec:
            self._exec[command] = self._run(command, line)
        return self._exec[command]

    def _run(self, command: str, line: _Line) -> bool:
        try:
            process = subprocess.Popen(  # noqa: S603 - the user's own ssh config asks for it
                ["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            raise ConfigError(f"{line.where}: Match exec: cannot run /bin/sh: "
                              f"{error.strerror}") from None
        try:
            return process.wait(self.exec_timeout) == 0
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            self._exec_notes.append(f"{line.where}: Match exec {command!r} did not finish "
                                    f"within {self.exec_timeout:g}s; it was killed and "
                                    "counts as not matching")
            return False


class _Pass:
    """One reading of the files for one host, as readconf.c does it."""

    def __init__(self, config: SshConfig, host: str, original: str, values: _Values,
                 presets: _Presets, final: bool, hostname: str | None) -> None:
        self.config, self.host, self.original, self.values = config, host, original, values
        self.presets, self.final, self.hostname = presets, final, hostname
        self.want_final = False

    def run(self, lines: Sequence[_Line], user_file: bool, *, active: bool, never: bool,
            depth: int) -> bool:
        for line in lines:
            keyword = line.keyword
            if keyword == "host":
                active = not never and _host_matches(self.host, line)
            elif keyword == "match":
                matched = self.match(line)
                active = not never and matched
            elif keyword == "include":
                self.include(line, user_file, active, never, depth)
            elif active:
                self.take(line)
        return active

    def include(self, line: _Line, user_file: bool, active: bool, never: bool,
                depth: int) -> None:
        if depth + 1 > _MAX_DEPTH:
            raise ConfigError(f"{line.where}: Include nested more than {_MAX_DEPTH} deep")
        for arg in line.args:
            if arg.startswith("~") and not user_file:
                raise ConfigError(f"{line.where}: bad include path {arg} (no ~ in the "
                                  "system file)")
            if not os.path.isabs(arg) and not arg.startswith("~"):
                arg = os.path.join("~/.ssh" if user_file else "/etc/ssh", arg)
            for path in sorted(glob.glob(os.path.expanduser(arg))):
                lines = self.config._lines(path, True)
                if lines is None:
                    continue
                # An Include in a block that does not apply is read, but matches nothing.
                self.run(lines, user_file, active=active, never=never or not active,
                         depth=depth + 1)

    def take(self, line: _Line) -> None:
        values, keyword = self.values, line.keyword
        if keyword in ("identityfile", "certificatefile"):
            if keyword == "identityfile":
                _single(line)
                values.identity_files.append(line)
                if len(values.identity_files) > _MAX_IDENTITY_FILES:
                    raise ConfigError(f"{line.where}: too many identity files")
            else:
                values.others.append(line)
        elif keyword == "proxyjump":
            if values.jump is None and values.proxy_command is None:
                values.jump = line
        elif keyword == "proxycommand":
            if values.proxy_command is None and (values.jump is None
                                                 or values.jump.args[0].lower() == "none"):
                values.proxy_command = line
        elif keyword in ("connecttimeout", "serveraliveinterval") and _single(line) == "none":
            pass  # "none" leaves the value unset: a later line may still set it (readconf.c)
        elif keyword == "hostname" and self.final:
            pass  # ssh fixed the host name before the final pass
        elif keyword in HONOURED:
            values.first.setdefault(keyword, line)
        elif keyword == "ignoreunknown":
            values.first.setdefault(keyword, line)
        elif keyword in _NOTED:
            if keyword not in values.first:
                values.first[keyword] = line
                values.others.append(line)
        elif keyword not in _QUIET:
            values.unknown.append(line)

    def match(self, line: _Line) -> bool:
        """readconf.c's match_cfg_line."""
        first = self.values.first
        presets = self.presets
        port = presets.port or (_port(first["port"]) if "port" in first else 22)
        user = presets.user or (_single(first["user"]) if "user" in first
                                else self.config._account.pw_name)
        if self.final:
            host = self.hostname or self.host
        elif presets.hostname is not None:
            host = presets.hostname
        elif "hostname" in first:
            host = _expand(_single(first["hostname"]), {"h": self.original, "%": "%"},
                           _HOSTNAME_TOKENS, first["hostname"])
        else:
            host = self.original
        rest: str | None = line.rest
        result, attributes = True, 0
        while True:
            attribute, rest = _strdelim(rest)
            if attribute is None or attribute == "" or attribute.startswith("#"):
                break
            negate = attribute.startswith("!")
            name = attribute[1:].lower() if negate else attribute.lower()
            if name == "all":
                following, _ = _strdelim(rest)
                if attributes > 1 or (following and not following.startswith("#")):
                    raise ConfigError(f"{line.where}: '{attribute}' cannot be combined with "
                                      "other Match attributes")
                return result and not negate
            attributes += 1
            if name in ("canonical", "final"):
                if name == "final" and not self.final:
                    self.want_final = True
                if self.final == negate:
                    result = False
                continue
            argument, rest = _strdelim(rest)
            if argument is None or argument == "" or argument.startswith("#"):
                raise ConfigError(f"{line.where}: missing Match criteria for {name}")
            if name == "host":
                matched = _pattern_list(host.lower(), argument, lower=True) == 1
            elif name == "originalhost":
                matched = _pattern_list(self.original.lower(), argument, lower=True) == 1
            elif name == "user":
                matched = _pattern_list(user, argument) == 1
            elif name == "localuser":
                matched = _pattern_list(self.config._account.pw_name, argument) == 1
            elif name == "exec":
                alias = first.get("hostkeyalias")
                tokens = self.config._tokens(
                    host=host, original=self.original, port=port, user=user,
                    alias=_single(alias).lower() if alias else host)
                command = _expand(argument, tokens, _ALL_TOKENS, line)
                if not result:  # skipped once an earlier criterion failed, as ssh does
                    continue
                matched = self.config.run_exec(command, line)
            else:
                raise ConfigError(f"{line.where}: Match {name} is not supported")
            if matched == negate:
                result = False
        if attributes == 0:
            raise ConfigError(f"{line.where}: Match needs one or more criteria")
        return result


def _final_hostname(name: str, values: _Values, preset: str | None) -> str:
    """ssh.c: HostName with %h expanded, lower-cased; the name if none."""
    if preset is not None:
        return preset.lower()
    line = values.first.get("hostname")
    if line is None:
        return name.lower()
    return _expand(_single(line), {"h": name, "%": "%"}, _HOSTNAME_TOKENS, line).lower()


# ---- files and lines ------------------------------------------------------------------------


def _shown(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home != "/" and path.startswith(home + "/") else path


def _read(path: str, check: bool, account: pwd.struct_passwd) -> list[_Line] | None:
    try:
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
            if stat.S_ISDIR(info.st_mode):
                return None
            if check and not _secure(info, account):
                raise ConfigError(f"bad owner or permissions on {path} (ssh refuses it too): "
                                  f"run: chmod go-w {path}")
            data = stream.read(_MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        return None
    except OSError as error:
        raise ConfigError(f"cannot read ssh config {path}: {error.strerror}") from None
    if len(data) > _MAX_BYTES:
        raise ConfigError(f"ssh config {path} is larger than {_MAX_BYTES >> 20} MiB")
    lines = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").split("\n"), 1):
        parsed = _parse_line(raw, path, number)
        if parsed is not None:
            lines.append(parsed)
    return lines


def _secure(info: os.stat_result, account: pwd.struct_passwd) -> bool:
    """misc.c's secure_permissions: owned by us or root, writable by no one else
    (group-writable only for a group whose one member is the owner)."""
    if info.st_uid not in (0, account.pw_uid) or info.st_mode & stat.S_IWOTH:
        return False
    if info.st_mode & stat.S_IWGRP:
        try:
            group = grp.getgrgid(info.st_gid)
        except KeyError:
            return False
        members = list(group.gr_mem)
        return members == [account.pw_name] or (not members and group.gr_gid
                                                 == account.pw_gid)
    return True


def _parse_line(raw: str, path: str, number: int) -> _Line | None:
    """readconf.c's process_config_line: keyword, then arguments (None: nothing here)."""
    text = raw.rstrip(_WHITESPACE + "\f")
    where = f"{_shown(path)} line {number}"
    keyword, rest = _strdelim(text)
    if keyword == "":
        keyword, rest = _strdelim(rest)
    if keyword is None or keyword == "" or keyword.startswith("#"):
        return None
    keyword = keyword.lower()
    rest = (rest or "").lstrip(_WHITESPACE)
    if not rest:
        raise ConfigError(f"{where}: no argument after keyword {keyword!r}")
    args = _argv_split(rest)
    if args is None:
        raise ConfigError(f"{where}: invalid quotes")
    if not args and keyword not in ("match",):
        raise ConfigError(f"{where}: no argument after keyword {keyword!r}")
    if any(a == "" for a in args) and keyword not in ("match", "proxycommand",
                                                       "localcommand", "remotecommand"):
        raise ConfigError(f"{where}: keyword {keyword} empty argument")
    if keyword in _SINGLE and len(args) > 1:
        raise ConfigError(f"{where}: keyword {keyword} extra arguments at end of line")
    if keyword == "proxycommand":
        rest = rest.lstrip(_WHITESPACE + "=")
    return _Line(path, number, keyword, tuple(args), rest)


_SINGLE = frozenset({"hostname", "user", "port", "identityfile", "identitiesonly",
                     "identityagent", "connecttimeout", "stricthostkeychecking", "hostkeyalias",
                     "checkhostip", "serveraliveinterval", "serveralivecountmax",
                     "addressfamily", "proxyjump", "certificatefile"})


def _strdelim(text: str | None, split_equals: bool = True) -> tuple[str | None, str | None]:
    """misc.c's strdelim: the next word (double quotes group), and the rest."""
    if text is None:
        return None, None
    stops = _WHITESPACE + '"' + ("=" if split_equals else "")
    at = next((i for i, c in enumerate(text) if c in stops), -1)
    if at < 0:
        return text, None
    if text[at] == '"':
        text = text[:at] + text[at + 1:]
        end = text.find('"', at)
        if end < 0:
            return None, None  # no matching quote
        return text[:end], text[end + 1:].lstrip(_WHITESPACE)
    equals = split_equals and text[at] == "="
    word, rest = text[:at], text[at + 1:].lstrip(_WHITESPACE)
    if split_equals and rest.startswith("=") and not equals:
        rest = rest[1:].lstrip(_WHITESPACE)
    return word, rest


def _argv_split(text: str) -> list[str] | None:
    """misc.c's argv_split (terminating on `#`): None if a quote is not closed."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == "#":
            break
        quote, word = "", []
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n and (text[i + 1] in "'\"\\" or (
                    not quote and text[i + 1] == " ")):
                word.append(text[i + 1])
                i += 2
                continue
            if not quote and c in " \t":
                break
            if not quote and c in "'\"":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                word.append(c)
            i += 1
        if quote:
            return None
        args.append("".join(word))
    return args


# ---- patterns -------------------------------------------------------------------------------


def _host_matches(host: str, line: _Line) -> bool:
    """A `Host` line: some pattern matches `host` and no `!pattern` does (case-sensitive)."""
    return match_list(host, line.args) == 1


def _pattern_list(text: str, patterns: str, lower: bool = False) -> int:
    """match.c's match_pattern_list: 1 on a match, -1 on a negated match, else 0."""
    return match_list(text, (p.lower() if lower else p for p in patterns.split(",")))


# ---- values ---------------------------------------------------------------------------------


def _single(line: _Line) -> str:
    return line.args[0]


_T = TypeVar("_T")


def _flag(line: _Line) -> bool:
    return _choice(line, _FLAGS)


def _choice(line: _Line, choices: dict[str, _T]) -> _T:
    value = _single(line).lower()
    if value not in choices:
        raise ConfigError(f"{line.where}: {line.keyword}: unsupported value {_single(line)!r}"
                          f"; expected one of: {', '.join(choices)}")
    return choices[value]


def _port(line: _Line) -> int:
    text = _single(line)
    if text.isascii() and text.isdigit() and 0 < int(text) <= 65535:
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise ConfigError(f"{line.where}: badly formatted port number {text!r}") from None


def _integer(line: _Line) -> int:
    text = _single(line)
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise ConfigError(f"{line.where}: {line.keyword}: expected an integer, got {text!r}")
    return int(text)


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(line: _Line) -> int:
    """misc.c's convtime: `90`, `1m30s`, `2h` (units s m h d w, any case)."""
    text, total, number = _single(line), 0, ""
    for c in text:
        if c.isascii() and c.isdigit():
            number += c
        elif number and c.lower() in _UNITS and c:
            total += int(number) * _UNITS[c.lower()]
            number = ""
        else:
            raise ConfigError(f"{line.where}: {line.keyword}: invalid time value {text!r}")
    total += int(number or 0)
    if total > 2**31 - 1:
        raise ConfigError(f"{line.where}: {line.keyword}: invalid time value {text!r}")
    return total


def _expand(text: str, tokens: dict[str, str], allowed: Iterable[str], line: _Line) -> str:
    """misc.c's percent_expand, limited to the tokens the keyword accepts."""
    allowed = set(allowed) | {"%"}
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        key = text[i + 1: i + 2]
        if not key or key not in allowed or key not in tokens:
            raise ConfigError(f"{line.where}: {line.keyword}: unknown token "
                              f"%{key} in {text!r}")
        out.append(tokens[key])
        i += 2
    return "".join(out)


def _dollar(text: str, line: _Line) -> str:
    """`${VAR}` from the environment; a missing variable is an error, as in ssh."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("${", i):
            end = text.find("}", i)
            name = text[i + 2: end] if end > 0 else ""
            if end < 0 or not name or not (name.replace("_", "a").isalnum()
                                           and not name[0].isdigit()):
                raise ConfigError(f"{line.where}: {line.keyword}: bad variable in {text!r}")
            if name not in os.environ:
                raise ConfigError(f"{line.where}: {line.keyword}: environment variable "
                                  f"${{{name}}} is not set")
            out.append(os.environ[name])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _path(text: str, tokens: dict[str, str], line: _Line) -> str:
    """A path as ssh reads IdentityFile and UserKnownHostsFile: ~, then ${VAR}, then %."""
    expanded = _expand(_dollar(os.path.expanduser(text), line), tokens, _ALL_TOKENS, line)
    return os.path.abspath(expanded)


# ---- identity files ---------------------------------------------------------------------------


def identity_file_problem(path: str, have_passphrase: bool) -> str | None:
    """Why ssh (in batch mode) would skip the default identity file `path`, or None.

    Read without paramiko (the parent process decides what to say): a file
    that is unreadable, readable by others, encrypted when no passphrase was
    given, or a kind of key paramiko cannot use. A file that does not exist is
    not a problem: it is simply not offered.
    """
    try:
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
            head = stream.read(64 * 1024)
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if info.st_uid == os.getuid() and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"is accessible by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path}")
    text = head.decode("ascii", errors="replace")
    encrypted = "ENCRYPTED" in text or _openssh_cipher(text) not in (None, "none")
    if encrypted and not have_passphrase:
        return "is encrypted and no passphrase was given (--ask-passphrase)"
    if "-----BEGIN DSA PRIVATE KEY" in text or "ssh-dss" in (_openssh_type(text) or ""):
        return "is a DSA key, which paramiko does not support"
    if (_openssh_type(text) or "").startswith("sk-"):
        return "is a security-key (sk) key, which paramiko does not support"
    return None


def public_key_blob(path: str) -> bytes | None:
    """The public key of private key file `path`, read without decrypting it: from
    `path.pub`, else from the file's own clear public part (OpenSSH format). None if
    neither is there. How ssh matches an encrypted IdentityFile with the agent's copy."""
    import base64
    import binascii

    try:
        with open(path + ".pub", encoding="ascii", errors="replace") as stream:
            fields = stream.read(64 * 1024).split()
        return base64.b64decode(fields[1], validate=True) if len(fields) >= 2 else None
    except (OSError, ValueError, binascii.Error):
        pass
    try:
        with open(path, "rb") as stream:
            blob = _openssh_blob(stream.read(64 * 1024).decode("ascii", errors="replace"))
    except OSError:
        return None
    if blob is None:
        return None
    strings = _openssh_strings(blob, 3)
    at = len(b"openssh-key-v1\0") + sum(4 + len(s) for s in strings) + 4
    if len(strings) < 3 or at + 4 > len(blob):
        return None
    size = int.from_bytes(blob[at:at + 4], "big")
    return blob[at + 4: at + 4 + size] or None


def _openssh_blob(text: str) -> bytes | None:
    import base64
    import binascii

    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    if begin not in text or end not in text:
        return None
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        blob = base64.b64decode("".join(body.split()))
    except (binascii.Error, ValueError):
        return None
    return blob if blob.startswith(b"openssh-key-v1\0") else None


def _openssh_strings(blob: bytes, count: int) -> list[bytes]:
    out, at = [], len(b"openssh-key-v1\0")
    for _ in range(count):
        if at + 4 > len(blob):
            break
        size = int.from_bytes(blob[at:at + 4], "big")
        out.append(blob[at + 4: at + 4 + size])
        at += 4 + size
    return out


def _openssh_cipher(text: str) -> str | None:
    blob = _openssh_blob(text)
    if blob is None:
        return None
    strings = _openssh_strings(blob, 1)
    return strings[0].decode("ascii", errors="replace") if strings else None


def _openssh_type(text: str) -> str | None:
    blob = _openssh_blob(text)
    if blob is None:
        return None
    strings = _openssh_strings(blob, 3)  # cipher, kdf, kdf options; then count, public key
    at = len(b"openssh-key-v1\0") + sum(4 + len(s) for s in strings) + 4
    if len(strings) < 3 or at + 8 > len(blob):
        return None
    public = blob[at + 4:]
    size = int.from_bytes(public[:4], "big")
    return public[4:4 + size].decode("ascii", errors="replace")
