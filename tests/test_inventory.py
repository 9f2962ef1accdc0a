"""The YAML inventory: format, precedence, selection, and one test per error text."""

from __future__ import annotations

import codecs
import os
import shlex
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetexec.exceptions import InventoryError
from fleetexec.host import Host
from fleetexec.inventory import Inventory, hosts_from_targets, load_inventory, parse_inventory
from fleetexec.inventory import loader as inventory_loader
from fleetexec.inventory import parser as inventory_parser

ROOT = Path(__file__).resolve().parent.parent
VAULT = ("secrets do not belong in the inventory; "
         "use FLEETEXEC_PASSWORD / --ask-password or an encrypted key file")


def parse(text: str) -> Inventory:
    return parse_inventory(textwrap.dedent(text), "inv.yaml")


def error(text: str, dedent: bool = True) -> str:
    """The one-line message `text` is refused with."""
    with pytest.raises(InventoryError) as info:
        parse_inventory(textwrap.dedent(text) if dedent else text, "inv.yaml")
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    return message


def names(hosts: list[Host]) -> list[str]:
    return [h.name for h in hosts]


# --- the format ------------------------------------------------------------------

FULL = """\
defaults:
  user: deploy
  port: 22
  key_files: [/keys/default]
  connect_timeout: 10
  command_timeout: 60
  known_hosts_file: /kh/fleet
groups:
  web:
    hosts: ["web[01-03].example.com"]
    vars: { user: www }
    children: [edge]
  edge:
    hosts: [lb1.example.com]
    vars: { port: 2222 }
hosts:
  web01.example.com: { address: 10.0.0.11 }
  "db[1-3]": { port: 2201, connect_timeout: 2.5 }
  db7:
"""


def test_full_example_from_the_design() -> None:
    inv = parse(FULL)
    assert list(inv.hosts) == ["web01.example.com", "web02.example.com", "web03.example.com",
                               "lb1.example.com", "db1", "db2", "db3", "db7"]
    web01 = inv.hosts["web01.example.com"]
    assert web01 == Host("web01.example.com", address="10.0.0.11", port=22, user="www",
                         key_files=("/keys/default",), connect_timeout=10.0,
                         command_timeout=60.0, known_hosts_file="/kh/fleet")
    assert web01.groups == ("web",)
    lb1 = inv.hosts["lb1.example.com"]
    assert (lb1.port, lb1.user, lb1.groups) == (2222, "www", ("web", "edge"))
    db2 = inv.hosts["db2"]
    assert (db2.port, db2.user, db2.connect_timeout, db2.groups) == (2201, "deploy", 2.5, ())
    assert inv.hosts["db7"].port == 22
    assert inv.groups == {"web": ("web01.example.com", "web02.example.com", "web03.example.com",
                                  "lb1.example.com"),
                          "edge": ("lb1.example.com",)}


def test_inventory_is_read_only() -> None:
    inv = parse(FULL)
    with pytest.raises(TypeError):
        inv.hosts["x"] = Host("x")  # type: ignore[index]
    with pytest.raises(TypeError):
        inv.groups["x"] = ()  # type: ignore[index]


def test_example_file_in_the_repository_loads() -> None:
    inv = load_inventory(ROOT / "inventory.example.yaml")
    assert len(inv.hosts) == 12 and set(inv.groups) == {"web", "edge", "db", "staging", "canary"}
    assert inv.hosts["lb1.example.com"].port == 2222  # child vars beat the parent's
    assert inv.hosts["web01.example.com"].command_timeout == 60
    assert inv.hosts["no"].address == "10.0.0.99"
    assert inv.hosts["db1"].key_files == (str(ROOT / "keys" / "db_ed25519"),)
    assert names(inv.select("web,!edge")) == [f"web0{i}.example.com" for i in range(1, 5)]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "\ufeff", "~\n"])
def test_empty_inventory_has_no_hosts_and_select_says_so(text: str) -> None:
    inv = parse_inventory(text, "inv.yaml")
    assert dict(inv.hosts) == {} and dict(inv.groups) == {}
    with pytest.raises(InventoryError, match=r"^inv\.yaml: no hosts in the inventory$"):
        inv.select()


def test_sections_are_optional_and_null_entries_mean_nothing_set() -> None:
    inv = parse("""\
        defaults:
        groups:
          empty:
          g: {hosts: [a], vars: , children: }
          h: {hosts: , vars: ~}
        hosts:
          b:
    """)
    assert list(inv.hosts) == ["a", "b"]
    assert inv.groups == {"empty": (), "g": ("a",), "h": ()}
    assert dict(parse("hosts:\ngroups:\n").hosts) == {}


def test_host_order_is_first_mention_in_the_file() -> None:
    inv = parse("""\
        hosts:
          z1: {}
        groups:
          g: {hosts: [a1, z1, m1]}
    """)
    assert list(inv.hosts) == ["z1", "a1", "m1"]
    assert inv.groups["g"] == ("z1", "a1", "m1")


def test_key_files_accepts_one_string_and_an_empty_list() -> None:
    inv = parse("""\
        defaults: {key_files: /k/one}
        hosts:
          a: {}
          b: {key_files: []}
    """)
    assert inv.hosts["a"].key_files == ("/k/one",) and inv.hosts["b"].key_files == ()


def test_paths_expand_tilde_and_resolve_against_the_inventory_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "inv.yaml"
    path.write_text("defaults:\n  key_files: [~/.ssh/id, keys/id, ../x/id, /abs/id]\n"
                    "  known_hosts_file: kh\nhosts:\n  a:\n")
    host = load_inventory(path).hosts["a"]
    assert host.key_files == (str(tmp_path / "home/.ssh/id"), str(tmp_path / "conf/keys/id"),
                              str(tmp_path / "x/id"), "/abs/id")
    assert host.known_hosts_file == str(tmp_path / "conf/kh")


def test_paths_in_a_string_inventory_resolve_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    inv = parse_inventory("hosts: {a: {key_files: k}}")
    assert inv.hosts["a"].key_files == (str(tmp_path / "k"),)


@pytest.mark.parametrize(
    ("address", "expected"),
    [("10.0.0.1", "10.0.0.1"), ("'::1'", "::1"), ("'[::1]'", "::1"), ("2001:db8::7", "2001:db8::7"),
     ("db.internal.", "db.internal.")],
)
def test_address_forms(address: str, expected: str) -> None:
    assert parse(f"hosts: {{a: {{address: {address}}}}}").hosts["a"].address == expected


@pytest.mark.parametrize("value", ["0", "7", "2.5", "3600"])
def test_timeouts_accept_int_and_float(value: str) -> None:
    host = parse(f"hosts: {{a: {{connect_timeout: {value}, command_timeout: {value}}}}}").hosts["a"]
    assert host.connect_timeout == host.command_timeout == float(value)


def test_quoted_bool_looking_names_are_fine() -> None:
    inv = parse("""\
        groups:
          "yes": {hosts: ["no", "on"], vars: {user: "off"}}
    """)
    assert list(inv.hosts) == ["no", "on"] and inv.hosts["no"].user == "off"


# --- precedence --------------------------------------------------------------------

def test_host_beats_group_beats_defaults() -> None:
    inv = parse("""\
        defaults: {user: d, port: 1001, connect_timeout: 1}
        groups:
          g: {hosts: [a, b], vars: {user: g, port: 1002}}
        hosts:
          a: {user: h}
    """)
    a, b = inv.hosts["a"], inv.hosts["b"]
    assert (a.user, a.port, a.connect_timeout) == ("h", 1002, 1.0)
    assert (b.user, b.port, b.connect_timeout) == ("g", 1002, 1.0)


def test_child_group_vars_beat_every_ancestor() -> None:
    inv = parse("""\
        groups:
          top: {children: [mid], vars: {user: top, port: 1001, command_timeout: 5}}
          mid: {children: [leaf], vars: {user: mid, port: 1002}}
          leaf: {hosts: [a], vars: {user: leaf}}
    """)
    a = inv.hosts["a"]
    assert (a.user, a.port, a.command_timeout) == ("leaf", 1002, 5.0)
    assert a.groups == ("top", "mid", "leaf")


def test_unrelated_groups_may_agree() -> None:
    inv = parse("""\
        groups:
          a: {hosts: [h], vars: {user: x}}
          b: {hosts: [h], vars: {user: x}}
    """)
    assert inv.hosts["h"].user == "x" and inv.hosts["h"].groups == ("a", "b")


def test_unrelated_groups_that_disagree_are_an_error() -> None:
    assert error("""\
        groups:
          a: {hosts: [h], vars: {user: x}}
          b: {hosts: [h], vars: {user: y}}
    """) == ("inv.yaml:3: groups.b.vars.user: host 'h' gets user 'x' from group 'a' (line 2) "
             "and 'y' from group 'b'; set it on the host or make one group a child of the other")


def test_a_host_setting_settles_a_group_conflict() -> None:
    inv = parse("""\
        groups:
          a: {hosts: [h], vars: {user: x}}
          b: {hosts: [h], vars: {user: y}}
        hosts:
          h: {user: z}
    """)
    assert inv.hosts["h"].user == "z"


def test_a_common_child_settles_a_diamond() -> None:
    inv = parse("""\
        groups:
          a: {children: [c], vars: {port: 1001}}
          b: {children: [c], vars: {port: 1002}}
          c: {hosts: [h], vars: {port: 1003}}
    """)
    assert inv.hosts["h"].port == 1003
    assert inv.groups == {"a": ("h",), "b": ("h",), "c": ("h",)}


def test_children_are_flattened_and_deduplicated() -> None:
    inv = parse("""\
        groups:
          all_: {children: [web, db], hosts: [lb]}
          web: {hosts: ["web[1-2]"], children: [edge]}
          edge: {hosts: [web2, e1]}
          db: {hosts: [db1]}
    """)
    assert inv.groups["all_"] == ("lb", "web1", "web2", "e1", "db1")
    assert inv.groups["web"] == ("web1", "web2", "e1")
    assert inv.hosts["web2"].groups == ("all_", "web", "edge")


# --- selection ---------------------------------------------------------------------

SELECT = """\
groups:
  web: {hosts: ["web[01-05]"]}
  db: {hosts: ["db[1-3]"], children: [dbx]}
  dbx: {hosts: [dbx1]}
  empty:
hosts:
  lb1:
"""


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        ((), ["web01", "web02", "web03", "web04", "web05", "db1", "db2", "db3", "dbx1", "lb1"]),
        (("web",), ["web01", "web02", "web03", "web04", "web05"]),
        (("lb1",), ["lb1"]),
        (("db",), ["db1", "db2", "db3", "dbx1"]),
        (("db*",), ["db1", "db2", "db3", "dbx1"]),
        (("web0?",), ["web01", "web02", "web03", "web04", "web05"]),
        (("web[02-03]",), ["web02", "web03"]),
        (("web[01,05]",), ["web01", "web05"]),
        (("lb1,web[01,05],db1",), ["web01", "web05", "db1", "lb1"]),
        (("lb1", "web01"), ["web01", "lb1"]),
        (("web,web01,web*",), ["web01", "web02", "web03", "web04", "web05"]),
        (("web,!web03",), ["web01", "web02", "web04", "web05"]),
        (("web", "!web[01-02]"), ["web03", "web04", "web05"]),
        (("!db",), ["web01", "web02", "web03", "web04", "web05", "lb1"]),
        (("!web*,!db*",), ["lb1"]),
        (("db,!dbx",), ["db1", "db2", "db3"]),
        (("!dbx", "db"), ["db1", "db2", "db3"]),
        ((" web01 , lb1 ",), ["web01", "lb1"]),
        (("!web[05-09]", "web"), ["web01", "web02", "web03", "web04"]),
    ],
)
def test_select(patterns: tuple[str, ...], expected: list[str]) -> None:
    assert names(parse(SELECT).select(*patterns)) == expected


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (("nope",), "<p>: no host or group matches 'nope'"),
        (("web,nope",), "<p>: no host or group matches 'nope'"),
        (("!nope",), "<p>: no host or group matches '!nope'"),
        (("web9*",), "<p>: no host or group matches 'web9*'"),
        (("web[1-2]",), "<p>: no host or group matches 'web[1-2]'"),
        (("web[1-x]",), "<p>: bad term 'web[1-x]': bad range '[1-x]' in 'web[1-x]': "
                        "use [1-5], [01-20], [1,3,7-9] or [1-9/2]"),
        (("web0[13]",), "<p>: no host or group matches 'web0[13]'"),
        (("WEB01",), "<p>: no host or group matches 'WEB01'"),
        (("web[01-09]",), "<p>: 'web[01-09]' names hosts not in the inventory: web[06-09]"),
        (("empty",), "<p>: the selection 'empty' leaves no hosts"),
        (("web", "!web"), "<p>: the selection 'web,!web' leaves no hosts"),
        (("web,,db",), "empty term in host pattern 'web,,db'"),
        (("",), "empty term in host pattern ''"),
        (("!",), "empty term in host pattern '!'"),
    ],
)
def test_select_errors(patterns: tuple[str, ...], message: str) -> None:
    inv = parse_inventory(SELECT, "<p>")
    with pytest.raises(InventoryError) as info:
        inv.select(*patterns)
    assert str(info.value) == message


# --- hosts without an inventory ----------------------------------------------------

@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["web1"], [(None, "web1", None)]),
        (["deploy@web[1-3]:2222,db1"],
         [("deploy", "web1", 2222), ("deploy", "web2", 2222), ("deploy", "web3", 2222),
          (None, "db1", None)]),
        (["[::1]:2222"], [(None, "::1", 2222)]),
        (["root@[::1]"], [("root", "::1", None)]),
        (["::1"], [(None, "::1", None)]),
        (["10.0.0.1:2200"], [(None, "10.0.0.1", 2200)]),
        (["web[01-02].dc,web[1,3]"],
         [(None, "web01.dc", None), (None, "web02.dc", None), (None, "web1", None),
          (None, "web3", None)]),
        (["a", "b,a"], [(None, "a", None), (None, "b", None)]),
        (["web1:22"], [(None, "web1", 22)]),
    ],
)
def test_hosts_from_targets(patterns: list[str],
                            expected: list[tuple[str | None, str, int | None]]) -> None:
    # A port not written stays None: resolve() fills it (ssh config, then 22).
    assert [(h.user, h.name, h.port) for h in hosts_from_targets(patterns)] == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("-oProxyCommand=id", "bad host target '-oProxyCommand=id': "
                              "not a valid host name or IP address: '-oProxyCommand=id'"),
        ("web1;id", "bad host target 'web1;id': not a valid host name or IP address: 'web1;id'"),
        ("-l@web1", "bad host target '-l@web1': not a valid user name: '-l'"),
        ("web1:0", "bad host target 'web1:0': bad port '0' in 'web1:0': expected 1-65535"),
        ("web1:0022", "bad host target 'web1:0022': bad port '0022' in 'web1:0022': "
                      "expected 1-65535"),
        ("web[1-3", "bad host target 'web[1-3': unbalanced bracket in 'web[1-3'"),
        ("web[3-1]", "bad host target 'web[3-1]': bad range '[3-1]' in 'web[3-1]': 3 > 1"),
        ("[::1]x", "bad host target '[::1]x': unexpected text after ']' in '[::1]x'"),
        ("a\nb", "bad host target 'a\\nb': not a valid host name or IP address: 'a\\nb'"),
        ("a,,b", "empty term in host pattern 'a,,b'"),
        ("a:22,a:23", "host 'a' is given twice with different user or port in 'a:22,a:23'"),
    ],
)
def test_hosts_from_targets_errors(pattern: str, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        hosts_from_targets([pattern])
    assert str(info.value) == message


def test_hosts_from_targets_needs_a_host() -> None:
    with pytest.raises(InventoryError, match="^no hosts given$"):
        hosts_from_targets([])


# --- one test per error message ----------------------------------------------------

@pytest.mark.parametrize(
    ("value", "found"),
    [("0022", "'0022'"), ("0x16", "'0x16'"), ("0o26", "'0o26'"), ("22.0", "'22.0'"),
     ("1_0", "'1_0'"), ('"22"', "'22' (a quoted string)"), ("'22'", "'22' (a quoted string)"),
     ("0", "'0'"), ("65536", "'65536'"), ("-22", "'-22'"), ("true", "'true'"),
     ("0:22", "'0:22'"), ("[22]", "a list"), ("{a: 1}", "a mapping"), ("~", "'~'")],
)
def test_port_must_be_plain_decimal(value: str, found: str) -> None:
    assert error(f"hosts:\n  a:\n    port: {value}\n") == (
        f"inv.yaml:3: hosts.a.port: expected an integer 1-65535 in plain decimal, got {found}")


def test_empty_value_is_reported_on_its_keys_line() -> None:
    assert error("hosts:\n  a:\n    port:\n    user: x\n") == (
        "inv.yaml:3: hosts.a.port: expected an integer 1-65535 in plain decimal, got nothing")


@pytest.mark.parametrize("value", ["-1", ".nan", ".inf", "'10'", "010", "1e3", "yes", "[1]"])
def test_timeouts_must_be_numbers_at_least_zero(value: str) -> None:
    message = error(f"defaults:\n  command_timeout: {value}\n")
    assert message.startswith("inv.yaml:2: defaults.command_timeout: expected seconds >= 0 "
                              "(like 10 or 2.5), got ")


def test_long_values_are_shortened() -> None:
    message = error("defaults: {connect_timeout: " + "9" * 5000 + "}")
    assert message == ("inv.yaml:1: defaults.connect_timeout: expected seconds >= 0 (like 10 or "
                       f"2.5), got '{'9' * 60}…'")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts:\n  no: {}\n", "inv.yaml:2: hosts: expected a host name or range, got 'no', "
                               "which YAML reads as a boolean; quote it"),
        ("hosts:\n  on:\n", "inv.yaml:2: hosts: expected a host name or range, got 'on', "
                            "which YAML reads as a boolean; quote it"),
        ("hosts:\n  12:30: {}\n", "inv.yaml:2: hosts: expected a host name or range, "
                                  "got '12:30', which YAML reads as a number; quote it"),
        ("hosts:\n  10: {}\n", "inv.yaml:2: hosts: expected a host name or range, got '10', "
                               "which YAML reads as a number; quote it"),
        ("hosts:\n  ~: {}\n", "inv.yaml:2: hosts: expected a host name or range, got '~', "
                              "which YAML reads as null; quote it"),
        ("groups:\n  yes: {}\n", "inv.yaml:2: groups: expected a group name, got 'yes', "
                                 "which YAML reads as a boolean; quote it"),
        ("groups:\n  g: {hosts: [web1, off]}\n",
         "inv.yaml:2: groups.g.hosts[1]: expected a host name or range, got 'off', "
         "which YAML reads as a boolean; quote it"),
        ("groups:\n  g: {children: [true]}\n",
         "inv.yaml:2: groups.g.children[0]: expected a group name, got 'true', "
         "which YAML reads as a boolean; quote it"),
        ("defaults:\n  user: no\n", "inv.yaml:2: defaults.user: expected a user name, got 'no', "
                                    "which YAML reads as a boolean; quote it"),
        ("defaults:\n  user: 1000\n", "inv.yaml:2: defaults.user: expected a user name, "
                                      "got '1000', which YAML reads as a number; quote it"),
        ("hosts:\n  a: {address: 12:30}\n",
         "inv.yaml:2: hosts.a.address: expected a host name or IP address, got '12:30', "
         "which YAML reads as a number; quote it"),
        ("on: {}\n", "inv.yaml:1: expected a key, got 'on', which YAML reads as a boolean; "
                     "quote it"),
    ],
)
def test_yaml_1_1_traps_say_quote_it(text: str, message: str) -> None:
    assert error(text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts:\n  a: {user: 2001-01-01}\n",
         "inv.yaml:2: hosts.a.user: '2001-01-01' reads as a YAML timestamp; quote it"),
        ("hosts:\n  2001-01-01: {}\n",
         "inv.yaml:2: hosts: '2001-01-01' reads as a YAML timestamp; quote it"),
        ("<<: {hosts: {}}\n", "inv.yaml:1: '<<' reads as a YAML merge; quote it"),
        ("hosts:\n  a: !!binary aGVsbG8=\n",
         "inv.yaml:2: hosts.a: unsupported YAML tag '!!binary'"),
        ("hosts: !!set {a}\n", "inv.yaml:1: hosts: unsupported YAML tag '!!set'"),
        ("hosts:\n  a: !custom {}\n", "inv.yaml:2: hosts.a: unsupported YAML tag '!custom'"),
        ("hosts: !!python/object/apply:os.system ['id']\n",
         "inv.yaml:1: hosts: unsupported YAML tag '!!python/object/apply:os.system'"),
        ("!!python/object/new:os.system [id]\n",
         "inv.yaml:1: unsupported YAML tag '!!python/object/new:os.system'"),
        ("hosts:\n  ? !!python/name:os.system ''\n  : {}\n",
         "inv.yaml:2: hosts: unsupported YAML tag '!!python/name:os.system'"),
    ],
)
def test_non_standard_tags_are_refused(text: str, message: str) -> None:
    assert error(text) == message


def test_explicit_standard_tags_are_fine() -> None:
    assert parse("hosts: {a: {user: !!str deploy, port: !!int 22}}").hosts["a"].port == 22


def test_aliases_are_refused() -> None:
    assert error("""\
        defaults: &d {user: x}
        groups:
          g: {vars: *d}
    """) == "inv.yaml:1: groups.g.vars: YAML aliases (*name) are not supported; write it out"


def test_recursive_alias_does_not_hang() -> None:
    assert error("hosts: &a {x: *a}\n") == (
        "inv.yaml:1: hosts.x: YAML aliases (*name) are not supported; write it out")


def test_billion_laughs_is_refused_early() -> None:
    lines = ["hosts:", "  a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    assert "YAML aliases (*name) are not supported" in error("\n".join(lines))
    # and at the top level, the unknown key comes first
    assert error("a0: &a0 [x]\na1: [*a0, *a0]\n") == (
        "inv.yaml:1: a0: unknown key; expected one of: defaults, groups, hosts")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts: {}\nhosts: {}\n", "inv.yaml:2: hosts: duplicate key (first on line 1)"),
        ("hosts:\n  a: {}\n  a: {}\n", "inv.yaml:3: hosts.a: duplicate key (first on line 2)"),
        ("hosts:\n  a:\n    port: 22\n    port: 23\n",
         "inv.yaml:4: hosts.a.port: duplicate key (first on line 3)"),
        ("groups:\n  g: {}\n  g: {}\n", "inv.yaml:3: groups.g: duplicate key (first on line 2)"),
        ("hosts:\n  db[1-3]: {}\n  db[3-4]: {}\n",
         "inv.yaml:3: hosts.db[3-4]: host 'db3' is defined twice (lines 2 and 3)"),
        ("hosts:\n  db2: {}\n  'db[1-3]': {}\n",
         "inv.yaml:3: hosts.db[1-3]: host 'db2' is defined twice (lines 2 and 3)"),
        ("groups:\n  g:\n    hosts:\n      - a\n      - 'a'\n",
         "inv.yaml:5: groups.g.hosts[1]: host 'a' is listed twice (first on line 4)"),
        ("groups:\n  g: {hosts: ['web[1-3]', web2]}\n",
         "inv.yaml:2: groups.g.hosts[1]: host 'web2' is listed twice (first on line 2)"),
    ],
)
def test_duplicates_name_both_lines(text: str, message: str) -> None:
    assert error(text) == message


ALL_SETTINGS = ("port, user, key_files, connect_timeout, command_timeout, known_hosts_file, "
                "proxy_jump")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host: {}\n", "inv.yaml:1: host: unknown key (did you mean 'hosts'?); "
                       "expected one of: defaults, groups, hosts"),
        ("all: {}\n", "inv.yaml:1: all: unknown key; expected one of: defaults, groups, hosts"),
        ("defaults: {usr: x}\n", "inv.yaml:1: defaults.usr: unknown key (did you mean 'user'?); "
                                 f"expected one of: {ALL_SETTINGS}"),
        ("hosts:\n  a: {key_file: x}\n",
         "inv.yaml:2: hosts.a.key_file: unknown key (did you mean 'key_files'?); "
         f"expected one of: address, {ALL_SETTINGS}"),
        ("groups:\n  g: {var: {}}\n", "inv.yaml:2: groups.g.var: unknown key (did you mean "
                                      "'vars'?); expected one of: hosts, vars, children"),
        ("groups:\n  g: {vars: {hostname: x}}\n",
         f"inv.yaml:2: groups.g.vars.hostname: unknown key; expected one of: {ALL_SETTINGS}"),
        ("defaults: {address: x}\n",
         "inv.yaml:1: defaults.address: address can only be set on one host, under hosts:"),
        ("groups:\n  g: {vars: {address: x}}\n",
         "inv.yaml:2: groups.g.vars.address: address can only be set on one host, under hosts:"),
    ],
)
def test_unknown_keys(text: str, message: str) -> None:
    assert error(text) == message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("defaults:\n  password: hunter2-SECRET\n", "2: defaults.password"),
        ("defaults:\n  ansible_ssh_pass: hunter2-SECRET\n", "2: defaults.ansible_ssh_pass"),
        ("hosts:\n  a:\n    passphrase: hunter2-SECRET\n", "3: hosts.a.passphrase"),
        ("hosts:\n  a: {port: 0022, private_key: hunter2-SECRET}\n", "2: hosts.a.private_key"),
        ("groups:\n  g:\n    vars: {token: hunter2-SECRET}\n", "3: groups.g.vars.token"),
        ("groups:\n  g: {secret: hunter2-SECRET}\n", "2: groups.g.secret"),
        ("api_key: hunter2-SECRET\n", "1: api_key"),
        ("defaults:\n  Password: [hunter2-SECRET]\n", "2: defaults.Password"),
        ("hosts:\n  a:\n    key_files: \"-----BEGIN OPENSSH PRIVATE KEY-----\\nhunter2-SECRET\"\n",
         "3: hosts.a.key_files"),
        ("hosts:\n  a:\n    key_files:\n      - |\n        -----BEGIN RSA PRIVATE KEY-----\n"
         "        hunter2-SECRET\n", "4: hosts.a.key_files[0]"),
    ],
)
def test_secrets_are_refused_without_showing_them(text: str, key: str) -> None:
    message = error(text)
    assert message == f"inv.yaml:{key}: {VAULT}"
    assert "hunter2" not in message


def test_private_key_text_is_not_shown_in_a_type_error() -> None:
    message = error('defaults: {user: "-----BEGIN OPENSSH PRIVATE KEY-----\\nhunter2"}')
    assert message == ("inv.yaml:1: defaults.user: expected a POSIX user name, "
                       "got private key text (not shown)")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "inv.yaml:1: expected a mapping, got a list"),
        ("hello\n", "inv.yaml:1: expected a mapping, got 'hello'"),
        ("defaults: [a]\n", "inv.yaml:1: defaults: expected a mapping, got a list"),
        ("groups: [web]\n", "inv.yaml:1: groups: expected a mapping, got a list"),
        ("hosts: [a, b]\n", "inv.yaml:1: hosts: expected a mapping, got a list"),
        ("hosts:\n  a: [port]\n", "inv.yaml:2: hosts.a: expected a mapping, got a list"),
        ("hosts:\n  a: web\n", "inv.yaml:2: hosts.a: expected a mapping, got 'web'"),
        ("groups:\n  g: [a]\n", "inv.yaml:2: groups.g: expected a mapping, got a list"),
        ("groups:\n  g: {hosts: a}\n", "inv.yaml:2: groups.g.hosts: expected a list, got 'a'"),
        ("groups:\n  g: {children: c}\n",
         "inv.yaml:2: groups.g.children: expected a list, got 'c'"),
        ("groups:\n  g: {vars: [a]}\n",
         "inv.yaml:2: groups.g.vars: expected a mapping, got a list"),
        ("groups:\n  g: {hosts: [{a: 1}]}\n",
         "inv.yaml:2: groups.g.hosts[0]: expected a host name or range, got a mapping"),
        ("groups:\n  g: {children: [[a]]}\n",
         "inv.yaml:2: groups.g.children[0]: expected a group name, got a list"),
        ("? [a]\n: 1\n", "inv.yaml:1: expected a key, got a list"),
        ("defaults: {user: [x]}\n", "inv.yaml:1: defaults.user: expected a user name, got a list"),
        ("defaults: {key_files: {a: 1}}\n",
         "inv.yaml:1: defaults.key_files: expected a file path, got a mapping"),
        ("defaults: {key_files: [a, 7]}\n",
         "inv.yaml:1: defaults.key_files[1]: expected a file path, got '7', "
         "which YAML reads as a number; quote it"),
        ("defaults: {key_files: ''}\n",
         "inv.yaml:1: defaults.key_files: expected a file path, got '' (a quoted string)"),
        ("defaults: {known_hosts_file: [a]}\n",
         "inv.yaml:1: defaults.known_hosts_file: expected a file path, got a list"),
        ("defaults: {known_hosts_file: \"a\\x01b\"}\n",
         "inv.yaml:1: defaults.known_hosts_file: expected a file path, "
         "got 'a\\x01b' (a quoted string)"),
    ],
)
def test_wrong_types(text: str, message: str) -> None:
    assert error(text) == message


HOSTILE = ["-oProxyCommand=id", "web1;id", "web 1", "$(id)", "`id`", "a|b", "wéb1", "web1\u202e",
           "a\nb", "a\x1bb", "a\rb", "*", "web1:22", "root@web1"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_host_names_are_refused_everywhere(name: str) -> None:
    quoted = '"' + name.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    for text, key in [(f"hosts:\n  {quoted}: {{}}\n", "inv.yaml:2: hosts"),
                      (f"groups:\n  g:\n    hosts: [{quoted}]\n", "inv.yaml:3: groups.g.hosts[0]")]:
        message = error(text)
        assert message.startswith(f"{key}: expected a DNS name or IP address, got "), message
    message = error(f"hosts:\n  a:\n    address: {quoted}\n")
    assert message.startswith("inv.yaml:3: hosts.a.address: expected a DNS name or IP address")


def test_hostile_name_error_shows_the_name_escaped() -> None:
    assert error('hosts:\n  "-oProxyCommand=id\\n": {}\n') == (
        "inv.yaml:2: hosts: expected a DNS name or IP address, got '-oProxyCommand=id\\n'")


@pytest.mark.parametrize("user", ["-oProxyCommand=id", "'a b'", "'root;id'", "'-l'", "\"a\\n\""])
def test_bad_users(user: str) -> None:
    message = error(f"defaults:\n  user: {user}\n")
    assert message.startswith("inv.yaml:2: defaults.user: expected a POSIX user name, got ")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("'web[1-x]'", "bad range '[1-x]' in 'web[1-x]': "
                       "use [1-5], [01-20], [1,3,7-9] or [1-9/2]"),
        ("'web[3-1]'", "bad range '[3-1]' in 'web[3-1]': 3 > 1"),
        ("'web[1-3'", "unbalanced bracket in 'web[1-3'"),
        ("'w[1-200000]'", "'w[1-200000]' expands to more than 100000 names"),
        ("'-x[1-2]'", "expected a DNS name or IP address, got '-x1'"),
    ],
)
def test_bad_ranges(key: str, message: str) -> None:
    assert error(f"hosts:\n  {key}: {{}}\n") == f"inv.yaml:2: hosts: {message}"


def test_one_address_for_a_range_is_refused() -> None:
    assert error("hosts:\n  'db[1-3]': {address: 10.0.0.1}\n") == (
        "inv.yaml:2: hosts.db[1-3].address: one address for the 3 hosts of a range; "
        "set it per host")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("groups:\n  a: {children: [a]}\n",
         "inv.yaml:2: groups.a.children: cycle in children: a -> a"),
        ("groups:\n  a: {children: [b]}\n  b: {children: [a]}\n",
         "inv.yaml:3: groups.b.children: cycle in children: a -> b -> a"),
        ("groups:\n  a: {children: [b]}\n  b: {children: [c]}\n  c: {children: [b]}\n",
         "inv.yaml:4: groups.c.children: cycle in children: b -> c -> b"),
        ("groups:\n  web: {children: [edg]}\n  edge: {}\n",
         "inv.yaml:2: groups.web.children: unknown group 'edg' (did you mean 'edge'?)"),
        ("groups:\n  web: {children: [zz]}\n",
         "inv.yaml:2: groups.web.children: unknown group 'zz'"),
        ("groups:\n  1web: {}\n", "inv.yaml:2: groups: expected a group name (letters, digits, "
                                  "_ and -), got '1web'"),
        ("groups:\n  'web*': {}\n", "inv.yaml:2: groups: expected a group name (letters, digits, "
                                    "_ and -), got 'web*'"),
        ("groups:\n  web1: {}\nhosts:\n  web1:\n",
         "inv.yaml:2: groups: group 'web1' has the same name as a host; rename one"),
    ],
)
def test_group_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_long_children_chain_is_fine_and_too_deep_is_an_error() -> None:
    chain = "groups:\n" + "".join(f"  g{i}: {{children: [g{i + 1}]}}\n" for i in range(50))
    inv = parse(chain + "  g50: {hosts: [h]}\n")
    assert inv.hosts["h"].groups == tuple(f"g{i}" for i in range(51))
    deep = "groups:\n" + "".join(f"  g{i}: {{children: [g{i + 1}]}}\n" for i in range(5000))
    assert error(deep + "  g5000: {}\n") == "inv.yaml: nested too deeply"


LOADERS = {"libyaml": getattr(yaml, "CSafeLoader", None), "python": yaml.SafeLoader}


@pytest.fixture(params=list(LOADERS))
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with libyaml's parser (the default when PyYAML has it) and PyYAML's own."""
    if LOADERS[request.param] is None:
        pytest.skip("PyYAML is built without libyaml")
    monkeypatch.setattr(inventory_loader, "_LOADER", LOADERS[request.param])
    return str(request.param)


def test_deeply_nested_yaml_is_an_error(loader: str) -> None:
    nested = "hosts:\n" + "".join("  " * i + "a:\n" for i in range(1, 40))
    assert error(nested, dedent=False) == "inv.yaml:33: nested too deeply"
    assert error("[" * 5000 + "]" * 5000) == {
        "python": "inv.yaml:1: nested too deeply",
        "libyaml": "inv.yaml:1: YAML syntax error: while increasing flow level; "
                   "exceeded maximum nesting depth"}[loader]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts:\n\ta: {}\n", "inv.yaml:2: tab in indentation; indent YAML with spaces"),
        ("hosts:\n  a: {}\n \t\n", "inv.yaml:3: tab in indentation; indent YAML with spaces"),
        ("hosts:\r\n  a: {}\r\n  \tb: {}\n", "inv.yaml:3: tab in indentation; "
                                            "indent YAML with spaces"),
        ("hosts: [a\n", {"python": "inv.yaml:2: YAML syntax error: while parsing a flow sequence; "
                                   "expected ',' or ']', but got '<stream end>'",
                         "libyaml": "inv.yaml:2: YAML syntax error: while parsing a flow sequence; "
                                    "did not find expected ',' or ']'"}),
        ("hosts:\n  a: {}\n b: 1\n", {
            "python": "inv.yaml:3: YAML syntax error: while parsing a block mapping; expected "
                      "<block end>, but found '<block mapping start>'",
            "libyaml": "inv.yaml:3: YAML syntax error: while parsing a block mapping; did not "
                       "find expected key"}),
        ("hosts: {a: 'x}\n", "inv.yaml:2: YAML syntax error: while scanning a quoted scalar; "
                             "found unexpected end of stream"),
        ("hosts: {}\n---\nhosts: {}\n", "inv.yaml:2: YAML syntax error: expected a single "
                                       "document in the stream; but found another document"),
        ("hosts: *nope\n", {"python": "inv.yaml:1: YAML syntax error: found undefined alias 'nope'",
                            "libyaml": "inv.yaml:1: YAML syntax error: found undefined alias"}),
        ("hosts:\n  a\x07: {}\n", "inv.yaml:2: character U+0007 is not allowed in YAML"),
        ("x: 1\n\x00\n", "inv.yaml:2: character U+0000 is not allowed in YAML"),
        ("hosts:\n  a\ufeffb: {}\n", "inv.yaml:2: character U+FEFF is not allowed in YAML"),
        ("hosts: {a: \ud800}\n", "inv.yaml:1: character U+D800 is not allowed in YAML"),
    ],
)
def test_syntax_errors_carry_the_line(text: str, message: str | dict[str, str],
                                      loader: str) -> None:
    expected = message if isinstance(message, str) else message[loader]
    assert error(text, dedent=False) == expected


# --- files ---------------------------------------------------------------------------

def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(info.value) == f"{path}: cannot read the inventory: No such file or directory"


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory(str(tmp_path))
    assert str(info.value) == f"{tmp_path}: cannot read the inventory: Is a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_load_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("hosts: {a: }\n")
    path.chmod(0)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(info.value) == f"{path}: cannot read the inventory: Permission denied"


def test_load_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(b"hosts:\n  caf\xe9: {}\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(info.value) == f"{path}:2: not valid UTF-8 (byte 0xe9); save it as UTF-8"


@pytest.mark.parametrize("bom", [codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE])
def test_load_utf16_and_utf32_are_refused(tmp_path: Path, bom: bytes) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(bom + "hosts: {a: }\n".encode("utf-16-le"))
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(info.value) == f"{path}:1: file is UTF-16/32 encoded; save it as UTF-8"


def test_load_accepts_a_utf8_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(codecs.BOM_UTF8 + b"hosts:\r\n  a: {port: 2200}\r\n  b:\r\n")
    inv = load_inventory(path)
    assert list(inv.hosts) == ["a", "b"] and inv.path == str(path)


def test_load_refuses_a_huge_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory_loader, "_MAX_BYTES", 3 << 20)
    path = tmp_path / "inv.yaml"
    path.write_bytes(b"#" * ((3 << 20) + 1))
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(info.value) == f"{path}: file is larger than 3 MiB"


def test_a_file_over_4_mib_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(b"#" * ((4 << 20) + 1))
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(info.value) == f"{path}: file is larger than 4 MiB"


# --- the work a file can cause: refused where it starts, with file:line ---------------

_LISTS = "- [" + ", ".join(["aaaa"] * 20) + "]\n"


def _no_tree(*args: object, **kwargs: object) -> None:
    raise AssertionError("a YAML tree was built")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus:\n" + _LISTS * 30_000,
         ":1: bogus: unknown key; expected one of: defaults, groups, hosts"),
        ("hosts:\n  a:\nhost:\n" + _LISTS * 30_000,
         ":3: host: unknown key (did you mean 'hosts'?); expected one of: defaults, groups, hosts"),
        ("hosts: {}\npassword: [" + "x, " * 100_000 + "x]\n", f":2: password: {VAULT}"),
    ],
)
def test_an_unknown_top_level_key_is_refused_before_any_tree_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: str, text: str, message: str
) -> None:
    # Was: 29.5 s and 918 MB composing 4.3 MB of lists, then "unknown key".
    monkeypatch.setattr(inventory_loader.yaml, "compose", _no_tree)
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    assert len(text) < 4 << 20
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(info.value) == f"{path}{message}"


def test_too_many_yaml_nodes_are_refused_while_reading(monkeypatch: pytest.MonkeyPatch,
                                                       loader: str) -> None:
    monkeypatch.setattr(inventory_loader.yaml, "compose", _no_tree)
    monkeypatch.setattr(inventory_loader, "_MAX_NODES", 100)
    text = "groups:\n  g:\n    hosts:\n" + "".join(f"      - h{i}\n" for i in range(200))
    # root, groups, {g}, g, {hosts}, hosts, [list]: the 101st node is the 94th item
    assert error(text) == "inv.yaml:97: more than 100 YAML nodes (keys, values, list items)"


def test_lists_under_a_known_key_stop_at_the_node_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory_loader.yaml, "compose", _no_tree)
    message = error("groups:\n  g:\n    hosts:\n" + ("    " + _LISTS) * 20_000, dedent=False)
    assert message.startswith("inv.yaml:")
    assert message.endswith(": more than 250000 YAML nodes (keys, values, list items)")


def test_a_range_bomb_is_refused_by_the_names_it_makes() -> None:
    # 128 bytes; was 12.7 s: the host cap counted distinct names, not the work.
    text = "groups:\n" + "".join(f"  g{i}: {{hosts: ['h[1-99999]']}}\n" for i in range(4))
    assert len(text) == 128
    start = time.perf_counter()
    assert error(text) == ("inv.yaml:4: groups.g2.hosts[0]: more than 250000 host names in all "
                           "ranges and lists")
    assert time.perf_counter() - start < 5  # a guard; about 0.3 s


def test_names_are_counted_with_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory_parser, "_MAX_NAMES", 10)
    text = "groups:\n  a: {hosts: ['h[1-5]']}\n  b: {hosts: ['h[1-5]']}\n"
    assert len(parse(text).hosts) == 5
    assert error(text + "hosts:\n  h1:\n") == (
        "inv.yaml:5: hosts: more than 10 host names in all ranges and lists")


def test_a_membership_bomb_is_refused() -> None:
    text = "groups:\n  base: {hosts: ['h[1-99999]']}\n" + "".join(
        f"  t{i}: {{children: [base]}}\n" for i in range(10))
    assert error(text) == ("inv.yaml:7: groups.t4: more than 500000 group memberships "
                           "(hosts and groups, with children's counted in)")


def test_children_of_children_count_as_memberships(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory_parser, "_MAX_MEMBERSHIPS", 200)
    text = ("groups:\n" + "".join(f"  x{i}:\n" for i in range(50))
            + "  mid: {children: [" + ", ".join(f"x{i}" for i in range(50)) + "]}\n"
            + "".join(f"  t{i}: {{children: [mid]}}\n" for i in range(10)))
    # mid: 50, then each t adds 1 + 50: the third t crosses 200
    assert error(text) == ("inv.yaml:55: groups.t2.children: more than 200 group memberships "
                           "(hosts and groups, with children's counted in)")


def test_more_than_100000_hosts_in_all_is_refused() -> None:
    assert error("hosts:\n  'a[1-60000]':\n  'b[1-60000]':\n") == (
        "inv.yaml:3: hosts: more than 100000 hosts")


def test_load_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(b"")
    inv = load_inventory(path)
    assert dict(inv.hosts) == {}
    with pytest.raises(InventoryError) as info:
        inv.select("web")
    assert str(info.value) == f"{path}: no hosts in the inventory"


def test_line_numbers_count_crlf_and_cr_like_yaml(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(b"# c\r\nhosts:\r\n  a: {port: 0022}\r\n")
    with pytest.raises(InventoryError, match=r":3: hosts\.a\.port: "):
        load_inventory(path)


# --- never code execution, never another exception ---------------------------------

PAYLOADS = [
    "!!python/object/apply:os.system [{cmd}]\n",
    "hosts: !!python/object/apply:os.system [{cmd}]\n",
    "hosts:\n  a: !!python/object/apply:os.system [{cmd}]\n",
    "hosts:\n  ? !!python/object/apply:os.system [{cmd}]\n  : {{}}\n",
    "defaults:\n  user: !!python/object/apply:os.system [{cmd}]\n",
    "hosts: !!python/object/new:os.system [{cmd}]\n",
    "hosts: !!python/object/apply:subprocess.check_output [[sh, -c, {cmd}]]\n",
    "bogus_first: 1\nhosts: !!python/object/apply:os.system [{cmd}]\n",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_python_tags_never_execute(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    cmd = shlex.quote(f"touch {shlex.quote(str(marker))}")
    with pytest.raises(InventoryError):
        parse_inventory(payload.format(cmd=cmd), "inv.yaml")
    path = tmp_path / "inv.yaml"
    path.write_text(payload.format(cmd=cmd))
    with pytest.raises(InventoryError):
        load_inventory(path)
    assert not marker.exists()


def _only_inventory_or_inventory_error(text: str) -> None:
    try:
        inv = parse_inventory(text, "fuzz.yaml")
    except InventoryError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        assert str(exc).startswith("fuzz.yaml")
    else:
        assert isinstance(inv, Inventory)
        for host in inv.hosts.values():
            assert isinstance(host, Host)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_fuzz_random_text(text: str) -> None:
    _only_inventory_or_inventory_error(text)


_WORDS = ["defaults", "groups", "hosts", "vars", "children", "port", "user", "key_files",
          "connect_timeout", "command_timeout", "known_hosts_file", "address", "password",
          "proxy_jump",
          "web1", "web[1-3]", "db[01-02]", "'no'", "no", "yes", "~", "12:30", "0022", "22",
          "2.5", "-1", ".nan", "web", "db", "'-oProxyCommand=id'", "'a b'", "!!python/name:os.sep",
          "!!str x", "!!binary aGk=", "&a x", "*a", "2001-01-01", "<<", "'[::1]'", "::1", "\"\"",
          "[]", "{}", "'\\t'", "\"\\x00\"", "\"\\u202e\"", "|", "?", "-", ":", "#", ",", "\t",
          "\ufeff"]
_SCALAR = st.sampled_from(_WORDS)


def _node(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return _SCALAR
    child = _node(depth - 1)
    return st.one_of(
        _SCALAR,
        st.lists(child, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(_SCALAR, child), max_size=4).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
    )


_LINE = st.tuples(st.integers(0, 6), _SCALAR, st.sampled_from([": ", ":", " ", ": - ", "- "]),
                  _node(2)).map(lambda t: " " * t[0] + t[1] + t[2] + t[3])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINE, max_size=12))
def test_fuzz_yamlish_documents(lines: list[str]) -> None:
    _only_inventory_or_inventory_error("\n".join(lines) + "\n")


_PY = st.recursive(
    st.one_of(st.sampled_from([w.strip("'\"") for w in _WORDS]), st.integers(-1, 70000),
              st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6),
                                                      st.integers(), st.booleans()),
                                            inner, max_size=4)),
    max_leaves=20,
)
_DOC = st.fixed_dictionaries({}, optional={
    "defaults": _PY, "groups": st.dictionaries(st.sampled_from(["web", "db", "no", "1"]), _PY),
    "hosts": st.dictionaries(st.sampled_from(["web1", "db[1-2]", "a", "-x"]), _PY)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOC)
def test_fuzz_structured_documents(doc: dict[str, object]) -> None:
    _only_inventory_or_inventory_error(yaml.safe_dump(doc, allow_unicode=True))
