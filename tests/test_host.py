"""The `Host` record and the name/user/target checks every host goes through."""

from __future__ import annotations

import dataclasses

import pytest

from fleetexec.host import Host, check_hostname, check_user, parse_target

# faults.md row 4: names that could become an ssh option, a shell word or a
# terminal escape, or hide text (bidi), must never reach a connection.
HOSTILE_NAMES = [
    "-oProxyCommand=id",
    "-oProxyCommand=touch /tmp/pwned",
    "web1;id",
    "web1 && id",
    "$(id)",
    "`id`",
    "web1|id",
    "web1>x",
    "web 1",
    "web1\n",
    "web1\nid",
    "\nweb1",
    "web1\x00",
    "web1\x1b[2J",
    "web1\r",
    "web1\t",
    "wéb1",
    "web1\u202e",  # right-to-left override
    "web1\u200b",  # zero-width space
    "ｗｅｂ1",  # full-width letters
    "-web1",
    "web1-",
    "web..1",
    ".web1",
    "",
    ".",
    "a" * 64,
    ".".join(["a" * 63] * 5),
    "fe80::1%eth0;id",
    "fe80::1%$(id)",
    "fe80::1%a b",
    "[::1",
    "web1:22",
    "user@web1",
    "*",
    "web[1-3]",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_host_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        check_hostname(name)
    with pytest.raises(ValueError):
        Host(name)
    if name:  # an empty address means "the name"
        with pytest.raises(ValueError):
            Host("ok", address=name)


@pytest.mark.parametrize(
    "name",
    ["web1", "web-1.example.com", "example.com.", "a" * 63, "10.0.0.1", "::1", "[::1]",
     "fe80::1%eth0", "2001:db8::7", "under_score", "1host"],
)
def test_good_host_names(name: str) -> None:
    assert check_hostname(name) == name


@pytest.mark.parametrize("value", [None, 1, b"web1", ["web1"]])
def test_host_name_must_be_a_string(value: object) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        check_hostname(value)


@pytest.mark.parametrize("user", ["-oProxyCommand=id", "-root", "root;id", "ro ot", "root\n",
                                  "", "1root", "a" * 33, "rööt", "$(id)", "root\x00", None, 0])
def test_bad_users_are_refused(user: object) -> None:
    with pytest.raises(ValueError, match="not a valid user name"):
        check_user(user)


@pytest.mark.parametrize("user", ["root", "deploy", "_svc", "a.b-c_d", "machine$", "a" * 32])
def test_good_users(user: str) -> None:
    assert check_user(user) == user


def test_host_defaults_and_known_hosts_name() -> None:
    host = Host("web1")
    # None is "not set here": resolve() fills the port (ssh config, then 22).
    assert (host.address, host.port, host.user, host.key_files) == ("web1", None, None, ())
    assert host.known_hosts_name == "web1"  # an unset port is 22 here too
    assert Host("web1", port=22).known_hosts_name == "web1"
    assert Host("web1", address="10.0.0.1", port=2222).known_hosts_name == "[10.0.0.1]:2222"
    # HostKeyAlias: the name as written, whatever the port
    assert Host("web1", port=2222, host_key_alias="alias").known_hosts_name == "alias"


@pytest.mark.parametrize(("field", "value"), [
    ("host_key_policy", "no"), ("address_family", "inet4"), ("server_alive_interval", -1),
    ("server_alive_count_max", True),
])
def test_bad_ssh_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        Host("web1", **{field: value})  # type: ignore[arg-type]


def test_host_is_frozen_and_groups_do_not_affect_equality() -> None:
    host = Host("web1", groups=("web",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        host.port = 2  # type: ignore[misc]
    assert host == Host("web1", groups=("other",))


@pytest.mark.parametrize("port", [0, 65536, -1, True, 22.0, "22"])
def test_bad_ports(port: object) -> None:
    with pytest.raises(ValueError, match="port must be an integer 1-65535"):
        Host("web1", port=port)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, -0.5, True, float("nan")])
def test_bad_timeouts(value: float) -> None:
    with pytest.raises(ValueError, match="connect_timeout must be a number >= 0"):
        Host("web1", connect_timeout=value)
    with pytest.raises(ValueError, match="command_timeout must be a number >= 0"):
        Host("web1", command_timeout=value)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("web1", (None, "web1", None)),
        ("deploy@web1", ("deploy", "web1", None)),
        ("deploy@web1:2222", ("deploy", "web1", 2222)),
        ("web1:22", (None, "web1", 22)),
        ("[::1]:2222", (None, "::1", 2222)),
        ("[::1]", (None, "::1", None)),
        ("root@[fe80::1%eth0]:22", ("root", "fe80::1%eth0", 22)),
        ("::1", (None, "::1", None)),
        ("10.0.0.1:65535", (None, "10.0.0.1", 65535)),
    ],
)
def test_parse_target(target: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("web1:0", "bad port '0' in 'web1:0': expected 1-65535"),
        ("web1:022", "bad port '022' in 'web1:022': expected 1-65535"),
        ("web1:65536", "bad port '65536' in 'web1:65536': expected 1-65535"),
        ("web1:x", "bad port 'x' in 'web1:x': expected 1-65535"),
        ("web1:", "bad port '' in 'web1:': expected 1-65535"),
        ("web1:١٢", "bad port '١٢' in 'web1:١٢': expected 1-65535"),
        ("web1:" + "9" * 5000, "expected 1-65535"),
        ("[::1", "unbalanced '[' in '[::1'"),
        ("[::1]x", "unexpected text after ']' in '[::1]x'"),
        ("-x@web1", "not a valid user name: '-x'"),
        ("@web1", "not a valid user name: ''"),
        ("web1;id:22", "not a valid host name or IP address: 'web1;id'"),
    ],
)
def test_parse_target_errors(target: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_target(target)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
