"""Which keywords fleetexec honours, which it notes (and why), and which it reads and
ignores without a word. Any other keyword is "unknown" (noted unless IgnoreUnknown
covers it).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["HONOURED", "NOTED", "QUIET"]

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


NOTED: dict[str, tuple[Callable[[str], bool], str]] = {
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
QUIET = frozenset({
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
