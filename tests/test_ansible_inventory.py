"""Ansible inventories, read as they are (issue 8, item 5; `@group` selection: item 6).

Two halves. Unit tests on inline INI and YAML inventories, one feature at a time, need
nothing but fleetexec. The conformance half runs every case of the shared corpus
(../shared/conformance/ansible-inventories, never copied here) and asks Ansible itself
(ansible-core, in the `test` extra): `ansible-inventory --list` for hosts, groups and
variables, Ansible's own ssh connection plugin options for the connection settings those
variables make, and `ansible --list-hosts` for each pattern. Ansible is asked once per
run, in one subprocess that forks a fresh Ansible per case (its start-up is the cost).
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fleetexec.ansible import AnsibleInventory, detect_format, parse_ansible_inventory
from fleetexec.cli import main
from fleetexec.exceptions import InventoryError
from fleetexec.host import check_hostname
from fleetexec.inventory import load_inventory, parse_inventory

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "conformance" / "ansible-inventories"


def ini(text: str) -> AnsibleInventory:
    return parse_ansible_inventory(textwrap.dedent(text), "hosts", "ansible-ini")


def yml(text: str) -> AnsibleInventory:
    return parse_ansible_inventory(textwrap.dedent(text), "hosts.yml", "ansible-yaml")


def refused(read: Any, text: str) -> str:
    """The one-line message `text` is refused with (at load)."""
    with pytest.raises(InventoryError) as info:
        read(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def selected(inv: AnsibleInventory, *patterns: str) -> list[str]:
    return [h.name for h in inv.select(*patterns)]


def selection_error(inv: AnsibleInventory, *patterns: str) -> str:
    with pytest.raises(InventoryError) as info:
        inv.select(*patterns)
    return str(info.value)


# --- INI ---------------------------------------------------------------------------------

BASIC_INI = """\
    mail.example.com

    [webservers]
    foo.example.com
    bar.example.com:2222

    [dbservers]
    one.example.com
    foo.example.com ansible_host=10.0.0.1 ansible_user='deploy' ansible_port="2200"
    """


def test_ini_groups_all_and_ungrouped() -> None:
    inv = ini(BASIC_INI)
    assert inv.names == ("mail.example.com", "foo.example.com", "bar.example.com",
                         "one.example.com")
    assert inv.groups["ungrouped"] == ("mail.example.com",)
    assert inv.groups["webservers"] == ("foo.example.com", "bar.example.com")
    assert set(inv.groups["all"]) == set(inv.names)
    assert inv.hosts["foo.example.com"].groups == ("webservers", "dbservers")
    assert inv.hosts["mail.example.com"].groups == ("ungrouped",)


def test_ini_host_port_and_inline_vars_are_read_as_ansible_reads_them() -> None:
    inv = ini(BASIC_INI)
    bar, foo = inv.hosts["bar.example.com"], inv.hosts["foo.example.com"]
    assert (bar.address, bar.port, bar.user) == ("bar.example.com", 2222, None)
    # shlex removes the quotes; "2200" is then the literal 2200 for Ansible, and a port
    assert (foo.address, foo.port, foo.user) == ("10.0.0.1", 2200, "deploy")
    assert inv.hosts["mail.example.com"].port is None  # unset: ssh config, else 22


def test_ini_values_are_python_literals_else_text() -> None:
    inv = ini("""\
        [g]
        a ansible_user=vagrant  # a comment after the line is no part of it
        [g:vars]
        ansible_port=2222 # a literal: Python reads past the comment
        """)
    assert (inv.hosts["a"].user, inv.hosts["a"].port) == ("vagrant", 2222)
    # in [g:vars], text that is no literal keeps its comment, as in Ansible: not a user name
    inv = ini("[g]\na\n[g:vars]\nansible_user=vagrant # set by hand\n")
    assert inv.refused["a"] == ("hosts:4: ansible_user: host 'a' has ansible_user "
                                "'vagrant # set by hand', expected a POSIX user name")


def test_ini_children_and_vars_precedence() -> None:
    inv = ini("""\
        [all:vars]
        ansible_user=everyone
        ansible_port=2000
        [atlanta]
        host1
        host2 ansible_port=2202
        [southeast:children]
        atlanta
        [southeast:vars]
        ansible_port=2100
        [atlanta:vars]
        ansible_user=atl
        """)
    assert inv.groups["southeast"] == ("host1", "host2")
    host1, host2 = inv.hosts["host1"], inv.hosts["host2"]
    # a child group beats its parent, which beats all; the host beats its groups
    assert (host1.user, host1.port) == ("atl", 2100)
    assert (host2.user, host2.port) == ("atl", 2202)
    assert host1.groups == ("atlanta", "southeast")


def test_sibling_groups_are_decided_by_priority_then_name() -> None:
    text = """\
        [a_group]
        shared
        [b_group]
        shared
        [a_group:vars]
        ansible_user=a
        {priority}
        [b_group:vars]
        ansible_user=b
        """
    assert ini(text.format(priority="")).hosts["shared"].user == "b"  # the later name wins
    assert ini(text.format(priority="ansible_group_priority=10")).hosts["shared"].user == "a"


def test_ansible_ssh_spellings_beat_the_plain_ones_across_levels() -> None:
    inv = ini("""\
        [web]
        web1 ansible_user=alice ansible_host=10.0.0.1 ansible_port=2201
        web2 ansible_ssh_host=10.0.0.2 ansible_host=10.9.9.9
        web3 ansible_private_key_file=/keys/web3.pem
        web4 ansible_connection=paramiko ansible_paramiko_user=p
        [web:vars]
        ansible_ssh_user=deploy
        ansible_ssh_port=2200
        ansible_ssh_private_key_file=~/.ssh/web.pem
        """)
    web1, web2, web3 = (inv.hosts[n] for n in ("web1", "web2", "web3"))
    assert (web1.address, web1.port, web1.user) == ("10.0.0.1", 2200, "deploy")
    assert web2.address == "10.0.0.2"
    assert web3.key_files == ("~/.ssh/web.pem",)
    assert inv.hosts["web4"].user == "p"  # paramiko's own spelling beats both, for paramiko


def test_ini_ranges_letters_and_strides() -> None:
    inv = ini("[w]\nwww[01:03].example.com\ndb-[a:c]\nh[1:10:4]\nn[8:10]x[a:b]\n")
    assert inv.names == ("www01.example.com", "www02.example.com", "www03.example.com",
                         "db-a", "db-b", "db-c", "h1", "h5", "h9",
                         "n8xa", "n8xb", "n9xa", "n9xb", "n10xa", "n10xb")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("h[3:1]", "hosts:2: bad range [3:1] in 'h[3:1]': 3 is after 1"),  # Ansible: no hosts
        ("h[01:100]", "hosts:2: bad range [01:100] in 'h[01:100]': 01 and 100 are not the "
                      "same width"),
        ("h[1:5:0]", "hosts:2: bad range [1:5:0] in 'h[1:5:0]': the step must be 1 or more"),
        ("h[1-5]", "hosts:2: bad range [1-5] in 'h[1-5]': use [begin:end] or [begin:end:step]"),
        ("h[1:]", "hosts:2: bad range [1:] in 'h[1:]': no end"),
        ("h[a:zz]", "hosts:2: bad range [a:zz] in 'h[a:zz]': use numbers ([01:50]) or single "
                    "letters ([a:f])"),
        ("h[1:99999999]", "hosts:2: 'h[1:99999999]' expands to more than 100000 names"),
    ],
)
def test_bad_ranges_are_refused_with_the_line(line: str, message: str) -> None:
    assert refused(ini, f"[g]\n{line}\n") == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[usa:children]\nsoutheast\n",
         "hosts:2: section [usa:children] names group 'southeast', which is never defined "
         "(Ansible refuses this file too)"),
        ("[web:vars]\nx=1\n", "hosts:1: section [web:vars] is for group 'web', which is never "
                              "defined (Ansible refuses this file too)"),
        ("[web:hostz]\n", "hosts:1: section [web:hostz] has an unknown type: use [web], "
                          "[web:children] or [web:vars]"),
        ("[ web ]\n", "hosts:1: bad section '[ web ]': no spaces or other characters are "
                      "allowed in [group] or [group:kind]"),
        ("[web]\nh1 port\n", "hosts:2: expected key=value after the host, got 'port'"),
        ("[web]\nh1 a='b\n", "hosts:2: cannot read the host line: no closing quotation"),
        ("[web:vars]\nnothing\n[web]\n", "hosts:2: expected key=value in [web:vars], got "
                                         "'nothing'"),
        ("[a:children]\nb c\n", "hosts:2: expected a group name in [a:children], got 'b c'"),
        ("[web]\nh1:\n", "hosts:2: bad host 'h1:': a ':' must be followed by a port"),
        ("[a]\nh1\n[b]\nh1:2222\n", "hosts:4: host 'h1' gets port 2222 here, but it was first "
         "defined on line 2 with no port, and Ansible would ignore this one: set the port where "
         "the host first appears"),
        ("[a:children]\nb\n[b:children]\na\n", "hosts:4: cycle in children: a -> b -> a"),
        ("[b:children]\nc\n[c]\nh\n[a:children]\nb\n[c:children]\na\n",
         "hosts:6: cycle in children: b -> c -> a -> b"),
        ("[web:children]\nall\n", "hosts:2: group 'all' cannot be a child of 'web'"),
    ],
)
def test_ini_errors_are_one_line_with_the_line(text: str, message: str) -> None:
    assert refused(ini, text) == message


# --- YAML --------------------------------------------------------------------------------

BASIC_YAML = """\
    all:
      hosts:
        mail.example.com:
      vars:
        ansible_user: deploy
      children:
        webservers:
          hosts:
            foo.example.com:
              ansible_host: 10.0.0.1
            "bar.example.com:2222":
        dbservers:
          hosts: one.example.com
          vars:
            ansible_user: db
        prod:
          children:
            dbservers:
    """


def test_yaml_all_children_hosts_vars() -> None:
    inv = yml(BASIC_YAML)
    assert inv.names == ("mail.example.com", "foo.example.com", "bar.example.com",
                         "one.example.com")
    assert inv.groups["ungrouped"] == ("mail.example.com",)  # only in all: ungrouped
    assert inv.groups["prod"] == ("one.example.com",)
    foo, bar, one = (inv.hosts[n] for n in ("foo.example.com", "bar.example.com",
                                            "one.example.com"))
    assert (foo.address, foo.user) == ("10.0.0.1", "deploy")
    assert (bar.port, one.user) == (2222, "db")
    assert one.groups == ("dbservers", "prod")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web:\n  host:\n    a:\n", "hosts.yml:2: web.host: unexpected key in a group "
         "(Ansible skips it with a warning); expected hosts, children or vars"),
        ("web: [a, b]\n", "hosts.yml:1: web: expected a group (a mapping of hosts, children, "
                          "vars), got a list (Ansible skips it with a warning)"),
        ("web:\n  hosts:\n    a:\n    a:\n", "hosts.yml:4: web.hosts.a: duplicate key (first "
                                             "on line 3)"),
        ("web:\n  hosts: a\n    b\n", "hosts.yml:2: web.hosts: 'a b' is one name with spaces "
         "in it (Ansible reads a text here as one name); write a mapping, one name per line "
         "ending in ':'"),
        ("web:\n  hosts:\n    a: [1]\n", "hosts.yml:3: web.hosts.a: expected the host's "
                                           "variables (a mapping), got a list"),
        ("web:\n  hosts:\n    12:\n", "hosts.yml:3: web.hosts: expected a host name (quote "
                                      "numbers), got '12'"),
        ("plugin: amazon.aws.aws_ec2\nregions: [x]\n", "hosts.yml:1: this is an inventory "
         "plugin configuration (plugin:), not an inventory; inventory plugins are out of "
         "scope: use its output instead: ansible-inventory -i FILE --list --yaml > "
         "inventory.yml"),
    ],
)
def test_yaml_errors_are_one_line_with_the_line(text: str, message: str) -> None:
    assert refused(functools.partial(parse_ansible_inventory, path="hosts.yml",
                                     kind="ansible-yaml"), text) == message


def test_yaml_syntax_errors_carry_the_line() -> None:
    assert refused(yml, "web:\n  hosts:\n    a:\n   b:\n").startswith(
        "hosts.yml:4: YAML syntax error: while parsing a block mapping")


def test_yaml_merge_keys_and_unsafe_values() -> None:
    inv = yml("""\
        web:
          hosts:
            a: &base {ansible_user: deploy, ansible_port: 2200}
            b:
              <<: *base
              ansible_port: 2201
            c:
              ansible_user: !unsafe 'u{{x'
        """)
    assert (inv.hosts["b"].user, inv.hosts["b"].port) == ("deploy", 2201)
    assert "u{{x" in inv.refused["c"]  # !unsafe is text, and still no user name


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("ansible_port: 0022", "has ansible_port '0022', which YAML reads as a number; quote "
                               "it, expected a port 1-65535"),
        ("ansible_user: no", "has ansible_user 'no', which YAML reads as a boolean; quote it, "
                             "expected a user name"),
        ("ansible_user: !vault |\n        $ANSIBLE_VAULT;1.1;AES256\n        6162",
         "has ansible_user !vault ..., expected a user name"),
        ("ansible_host: '{{ inventory_hostname }}.example.com'",
         "has a Jinja2 template in ansible_host ('{{ inventory_hostname }}.example.com'); "
         "fleetexec does not evaluate templates"),
    ],
)
def test_yaml_values_fleetexec_will_not_guess_at(value: str, reason: str) -> None:
    inv = yml(f"web:\n  hosts:\n    a:\n      {value}\n")
    assert inv.refused["a"].endswith(f"host 'a' {reason}")


def test_python_tags_are_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"!!python/object/apply:os.system [{shlex.quote(f'touch {marker}')}]"
    inv = yml(f"web:\n  hosts:\n    a:\n      app_var: {payload}\n      ansible_user: {payload}\n")
    assert "ansible_user" in inv.refused["a"]
    assert not marker.exists()


def test_the_work_a_file_can_cause_is_bounded() -> None:
    # 56 bytes of INI ranges would make 400,000 names; 991 bytes of YAML aliases, 10^8 nodes
    assert refused(ini, "".join(f"[g{i}]\nh[1:99999]\n" for i in range(4))) == (
        "hosts:6: more than 250000 host names in all ranges and lists")
    bomb = ["l0: &l0 {vars: {x: 1}}"] + [
        f"l{k}: &l{k} {{children: {{" + ", ".join(f"l{k - 1}{c}: *l{k - 1}" for c in "abcdefghij")
        + "}}" for k in range(1, 9)]
    assert refused(yml, "\n".join(bomb) + "\n") == (
        "hosts.yml:1: more than 1000000 YAML nodes read (aliases and merge keys count each "
        "time)")


# --- refused per host: the inventory loads, selecting the host is the error --------------

MIXED = """\
    [web]
    web1
    web2 ansible_password=hunter2
    web3 ansible_connection=local
    web4 ansible_ssh_common_args='-o ProxyJump=bastion.example.com'
    web5 ansible_ssh_extra_args='-J jump@bastion:2222'
    web6 ansible_ssh_common_args='-o ProxyCommand="ssh -W %h:%p bastion"'
    web7 ansible_ssh_common_args='-o StrictHostKeyChecking=no'
    web8 ansible_ssh_extra_args='-o ForwardAgent=yes'
    web9 ansible_ssh_common_args='-C -o ControlMaster=auto -i /k/a' ansible_private_key_file=/k/m
    web10 ansible_host_key_checking=False
    web11 ansible_become_pass='{{ vault_sudo }}'
    web12 ansible_connection=winrm ansible_host=10.0.0.12
    """


def test_what_fleetexec_will_not_do_is_refused_per_host() -> None:
    inv = ini(MIXED)
    assert sorted(inv.hosts) == ["web1", "web4", "web5", "web6", "web9"]
    assert inv.hosts["web9"].key_files == ("/k/m", "/k/a")
    assert inv.hosts["web4"].proxy_jump == "bastion.example.com"
    assert inv.hosts["web5"].proxy_jump == "jump@bastion:2222"
    assert inv.hosts["web6"].proxy_jump == "bastion"  # ssh -W %h:%p HOST is a jump host
    assert inv.hosts["web1"].proxy_jump is inv.hosts["web1"].proxy_command is None
    reasons = {name: text.split(": ", 2)[-1] for name, text in inv.refused.items()}
    secret = ("secrets do not belong in the inventory; use FLEETEXEC_PASSWORD / --ask-password "
              "(or FLEETEXEC_SUDO_PASSWORD with --sudo) or an encrypted key")
    assert reasons == {
        "web2": f"host 'web2' has a secret in ansible_password (not shown): {secret}",
        "web3": "host 'web3' connects with 'local', not SSH; fleetexec runs commands over SSH "
                "only",
        "web7": "host 'web7' has ssh option '-o StrictHostKeyChecking=no'; fleetexec always "
                "checks host keys (--host-key-policy accept-new learns new ones)",
        "web8": "host 'web8' has ssh option '-o ForwardAgent=yes', which fleetexec does not "
                "support",
        "web10": "host 'web10' turns host key checking off; fleetexec always checks host keys "
                 "(--host-key-policy accept-new learns new ones)",
        "web11": f"host 'web11' has a secret in ansible_become_pass (not shown): {secret}",
        "web12": "host 'web12' connects with 'winrm', not SSH; fleetexec runs commands over "
                 "SSH only",
    }
    assert inv.refused["web7"].startswith("hosts:8: ansible_ssh_common_args: ")
    assert "hunter2" not in " ".join(inv.refused.values())


def test_a_proxy_command_is_a_jump_host_or_refused_never_run() -> None:
    inv = ini("""\
        [web]
        a ansible_ssh_common_args='-o ProxyCommand="ssh -q -W %h:%p -l ops -p 2200 gate"'
        b ansible_ssh_common_args='-o ProxyCommand="nc %h %p"'
        c ansible_connection=paramiko ansible_paramiko_proxy_command='ssh -W %h:%p gate'
        d ansible_ssh_common_args='-o ProxyCommand="ssh -W %h:%p gate; touch /tmp/x"'
        """)
    assert inv.hosts["a"].proxy_jump == "ops@gate:2200"
    assert inv.hosts["c"].proxy_jump == "gate"
    assert inv.hosts["a"].proxy_command is inv.hosts["c"].proxy_command is None
    assert sorted(inv.refused) == ["b", "d"]
    assert "'-o ProxyCommand=nc %h %p', a local command to run; fleetexec runs a " \
           "ProxyCommand only from your ssh config" in inv.refused["b"]


def test_selecting_a_refused_host_names_it_and_how_to_leave_it_out() -> None:
    inv = ini(MIXED)
    assert selection_error(inv, "web1,web3") == (
        "hosts:4: ansible_connection: host 'web3' connects with 'local', not SSH; fleetexec "
        "runs commands over SSH only; leave it out of the selection (e.g. 'all:!web3')")
    message = selection_error(inv, "web")
    assert message.startswith("hosts:3: ansible_password: host 'web2' has a secret")
    assert message.endswith("(and 6 more hosts fleetexec cannot run on: "
                            "'web3,web7,web8,web10,web11,web12')")
    assert selected(inv, "web1:web9") == ["web1", "web9"]


def test_a_host_name_ansible_takes_but_fleetexec_cannot_is_refused_per_host() -> None:
    inv = yml("all:\n  hosts:\n    příbor:\n    ok1:\n")
    assert list(inv.hosts) == ["ok1"]
    assert inv.refused["příbor"] == ("hosts.yml:3: host 'příbor' is not a DNS name or IP "
                                     "address, which fleetexec needs as a host name (Ansible "
                                     "takes any text)")
    assert inv.match("p*") == ["příbor"]


# --- group_vars/ and host_vars/ ----------------------------------------------------------

def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_group_vars_and_host_vars_next_to_the_inventory(tmp_path: Path) -> None:
    write(tmp_path / "production", """\
        [web]
        web1
        web2 ansible_user=inline
        [db]
        db1
        [web:vars]
        ansible_port=2000
        """)
    write(tmp_path / "group_vars/all.yml", "ansible_user: everyone\nansible_port: 1000\n")
    write(tmp_path / "group_vars/web", "ansible_ssh_private_key_file: /k/web\n")
    write(tmp_path / "group_vars/web.yml", "ansible_user: never-read\n")  # `web` came first
    write(tmp_path / "group_vars/db/10-conn.yaml", "ansible_port: 3000\nansible_user: a\n")
    write(tmp_path / "group_vars/db/20-more.yml", "ansible_user: b\n")
    write(tmp_path / "group_vars/db/notes.txt", "ansible_user: not-a-vars-file\n")
    write(tmp_path / "group_vars/db/.hidden.yml", "ansible_user: hidden\n")
    write(tmp_path / "host_vars/web1.yaml", "---\nansible_host: 192.0.2.1\n")
    inv = load_inventory(tmp_path / "production")
    web1, web2, db1 = inv.hosts["web1"], inv.hosts["web2"], inv.hosts["db1"]
    # group_vars/all beats [web:vars] written in the inventory: Ansible's order
    assert (web1.address, web1.port, web1.user, web1.key_files) == (
        "192.0.2.1", 1000, "everyone", ("/k/web",))
    assert (web2.user, db1.port, db1.user) == ("inline", 3000, "b")


def test_a_vault_encrypted_vars_file_refuses_the_hosts_it_applies_to(tmp_path: Path) -> None:
    write(tmp_path / "hosts", "[web]\nweb1\n[db]\ndb1\n")
    write(tmp_path / "group_vars/web.yml", "$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    inv = load_inventory(tmp_path / "hosts")
    assert list(inv.hosts) == ["db1"]
    assert inv.refused["web1"] == (
        f"{tmp_path}/group_vars/web.yml: host 'web1' takes variables from this vault-encrypted "
        "file, which fleetexec cannot read (nor know the connection settings it holds)")


def test_a_broken_vars_file_is_a_located_error(tmp_path: Path) -> None:
    write(tmp_path / "hosts", "[web]\nweb1\n")
    write(tmp_path / "host_vars/web1", "ansible_user: [a\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(tmp_path / "hosts")
    assert str(info.value).startswith(f"{tmp_path}/host_vars/web1:2: YAML syntax error: ")


# --- out of scope, and the format ----------------------------------------------------------

def test_dynamic_inventory_scripts_are_refused_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "ec2.py"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    with pytest.raises(InventoryError) as info:
        load_inventory(script)
    assert str(info.value) == (
        f"{script}: the file is executable, so Ansible would run it as a dynamic inventory "
        "script; fleetexec does not run inventory scripts (out of scope): use its output "
        "instead: ansible-inventory -i FILE --list --yaml > inventory.yml, or chmod -x it if "
        "it is a static inventory")
    script.chmod(0o644)
    with pytest.raises(InventoryError, match=r"ec2.py:1: this looks like a dynamic inventory "
                                             r"script \(#!\)"):
        load_inventory(script)
    assert not marker.exists()


def test_toml_and_vault_encrypted_inventories_are_refused(tmp_path: Path) -> None:
    (tmp_path / "hosts.toml").write_text("[web]\nhosts = {}\n")
    with pytest.raises(InventoryError, match="TOML inventories are not supported"):
        load_inventory(tmp_path / "hosts.toml")
    (tmp_path / "hosts").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    with pytest.raises(InventoryError, match="hosts:1: the inventory is vault-encrypted"):
        load_inventory(tmp_path / "hosts")


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ("hosts:\n  web1:\n", "inv.yaml", "fleetexec"),
        ("defaults: {user: x}\n", "hosts", "fleetexec"),
        ("", "inventory", "fleetexec"),
        ("bogus:\n- [a]\n", "inv.yaml", "fleetexec"),  # for fleetexec's "unknown key"
        ("all:\n  hosts:\n", "inv.yaml", "ansible-yaml"),
        ("empty:\nweb:\n  hosts:\n    a:\n", "inventory", "ansible-yaml"),
        ("plugin: aws_ec2\n", "aws_ec2.yml", "ansible-yaml"),
        ("[web]\na\n", "hosts", "ansible-ini"),
        ("mail.example.com\n\n[web]\nfoo\n", "hosts", "ansible-ini"),
        ("a ansible_host=1.2.3.4\n", "inventory", "ansible-ini"),
        ("[web]\na\n", "hosts.yml", "fleetexec"),  # a YAML file: YAML's own error
    ],
)
def test_the_format_is_detected(text: str, path: str, expected: str) -> None:
    assert detect_format(text, path) == expected


def test_the_cli_reads_ansible_inventories_and_takes_inventory_format(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    inventory.write_text("[web]\nweb1 ansible_port=2201\nweb2\n[db]\ndb1\n")
    done = CliRunner().invoke(main, ["hosts", "-i", str(inventory), "web:&web[1]"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[2].split()[:3] == ["web2", "web2", "22"]
    done = CliRunner().invoke(main, ["hosts", "-i", str(inventory), "--inventory-format",
                                     "ansible-yaml", "web"])
    assert done.exit_code == 2
    assert "inventory:2: YAML syntax error" in done.output
    done = CliRunner().invoke(main, ["hosts", "--inventory-format", "ansible-ini", "-H", "a"])
    assert done.exit_code == 2
    assert "--inventory-format needs an inventory (-i FILE)" in done.output


# --- Ansible's host patterns, and ClusterShell's @group --------------------------------------

PATTERNS = """\
    nogroup
    [webservers]
    cobweb
    webbing
    weber
    [staging]
    webbing
    db1
    [dbservers]
    db1
    db2
    [phoenix]
    weber
    [prod:children]
    dbservers
    """


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("all", ["nogroup", "cobweb", "webbing", "weber", "db1", "db2"]),
        ("*", ["nogroup", "cobweb", "webbing", "weber", "db1", "db2"]),
        ("webservers:&staging", ["webbing"]),
        ("webservers:!phoenix", ["cobweb", "webbing"]),
        ("webservers,dbservers", ["cobweb", "webbing", "weber", "db1", "db2"]),
        ("webservers:dbservers", ["cobweb", "webbing", "weber", "db1", "db2"]),
        ("&staging:webservers", ["webbing"]),  # & and ! apply after, wherever written
        ("!phoenix", ["nogroup", "cobweb", "webbing", "db1", "db2"]),
        ("webservers[0]", ["cobweb"]),
        ("webservers[-1]", ["weber"]),
        ("webservers[0:1]", ["cobweb", "webbing"]),  # a subscript, both ends included
        ("webservers[1:]", ["webbing", "weber"]),
        ("prod[1]", ["db2"]),
        ("~web(b|e)", ["webbing", "weber"]),
        ("~.*web", ["cobweb", "webbing", "weber"]),
        ("web*", ["cobweb", "webbing", "weber"]),  # the group, then hosts named so
        ("db[12]*", ["db1", "db2"]),  # not a range: an fnmatch class
        ("ungrouped", ["nogroup"]),
        ("@webservers", ["cobweb", "webbing", "weber"]),
        ("@webservers&@staging", ["webbing"]),
        ("@webservers!@phoenix,db2", ["cobweb", "webbing", "db2"]),
        ("@staging^@webservers", ["db1", "cobweb", "weber"]),
        ("all:!localhost", ["nogroup", "cobweb", "webbing", "weber", "db1", "db2"]),
    ],
)
def test_ansible_host_patterns(pattern: str, expected: list[str]) -> None:
    assert selected(ini(PATTERNS), pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("webservers:&nosuch", "hosts: no host or group matches '&nosuch'"),
        ("webservers:!nosuch", "hosts: no host or group matches '!nosuch'"),
        ("nosuch[0]", "hosts: no host or group matches 'nosuch[0]' (a trailing [...] is a "
                      "subscript in an Ansible pattern: it picks from what 'nosuch' matches)"),
        ("db[12]", "hosts: no host or group matches 'db[12]' (a trailing [...] is a "
                   "subscript in an Ansible pattern: it picks from what 'db' matches)"),
        ("webservers[5]", "hosts: subscript [5] is out of range in 'webservers[5]': "
                          "'webservers' matches 3 hosts"),
        ("webservers:&dbservers", "hosts: the selection 'webservers:&dbservers' leaves no "
                                  "hosts"),
        ("localhost", "hosts: 'localhost' is not in the inventory: Ansible would use its "
                      "implicit localhost, a local connection; fleetexec runs commands over "
                      "SSH only"),
        ("~web(", "hosts: bad pattern '~web(': missing ), unterminated subpattern at "
                  "position 3"),
        ("@nosuch&@webservers", "hosts: no group 'nosuch' (in '@nosuch&@webservers')"),
        ("@webservers&", "hosts: bad term '@webservers&': an operand of '&', '!' or '^' is "
                         "empty"),
    ],
)
def test_ansible_patterns_that_name_nothing_are_refused(pattern: str, message: str) -> None:
    assert selection_error(ini(PATTERNS), pattern) == message


def test_several_patterns_and_exclusions_join_as_in_ansible() -> None:
    inv = ini(PATTERNS)
    # the CLI passes SELECTION..., -H, -g, then -x as !terms
    assert selected(inv, "webservers", "dbservers", "!phoenix", "!db2") == [
        "cobweb", "webbing", "db1"]
    assert selected(inv) == list(inv.names)


FLEETEXEC_GROUPS = """\
    groups:
      web: {hosts: ["web[1-4]"]}
      staging: {hosts: [web2, web3, db1]}
    hosts:
      db1:
    """


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("@web", ["web1", "web2", "web3", "web4"]),
        ("@web&@staging", ["web2", "web3"]),
        ("@web!@staging", ["web1", "web4"]),
        ("@web^@staging", ["web1", "web4", "db1"]),
        ("web*!web[3-4]", ["web1", "web2"]),
        ("@staging,!@web&web[2-3]", ["db1"]),
    ],
)
def test_cluster_group_syntax_in_fleetexec_inventories(pattern: str,
                                                       expected: list[str]) -> None:
    inv = parse_inventory(textwrap.dedent(FLEETEXEC_GROUPS), "inv.yaml")
    assert [h.name for h in inv.select(pattern)] == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("@nope", "inv.yaml: no group 'nope' (in '@nope')"),
        ("@web&@nope", "inv.yaml: no group 'nope' (in '@web&@nope')"),
        ("@web&", "inv.yaml: bad term '@web&': an operand of '&', '!' or '^' is empty"),
        ("@web&db1", "inv.yaml: the selection '@web&db1' leaves no hosts"),
    ],
)
def test_cluster_group_syntax_errors(pattern: str, message: str) -> None:
    inv = parse_inventory(textwrap.dedent(FLEETEXEC_GROUPS), "inv.yaml")
    with pytest.raises(InventoryError) as info:
        inv.select(pattern)
    assert str(info.value) == message


# --- conformance: Ansible itself is the judge -------------------------------------------------

def _cases() -> dict[str, dict[str, Any]]:
    if not (CORPUS / "cases.toml").is_file():
        return {}
    import tomllib

    with open(CORPUS / "cases.toml", "rb") as file:
        return tomllib.load(file)


CASES = _cases()
NO_CORPUS = pytest.mark.skip(reason=f"the conformance corpus {CORPUS} is absent (it lives "
                                    "beside the repository, never in it)")
CASE_PARAMS = list(CASES) or [pytest.param("-", marks=NO_CORPUS)]

# Run in a subprocess: for each case, a forked child asks a fresh Ansible (its contexts can
# be set up once per process) what `ansible-inventory --list` and `ansible PATTERN
# --list-hosts` answer, by the code those commands run, and what its ssh connection plugin
# would use for each host. Output: JSON, one entry per case.
ORACLE = r'''
import json, os, sys, tempfile
from ansible.cli import CLI
from ansible.cli.inventory import InventoryCLI
from ansible.errors import AnsibleError
from ansible.utils.display import Display
import ansible.constants as C
from ansible.plugins.loader import connection_loader

warned = []
Display().warning = lambda msg, *args, **kwargs: warned.append(str(msg))

def connection(name, hostvars):
    kind = str(hostvars.get("ansible_connection", "ssh"))
    plugin = "paramiko_ssh" if "paramiko" in kind else "ssh"
    connection_loader.get(plugin, class_only=True)
    try:
        o = C.config.get_plugin_options("connection", plugin,
                                        variables={**hostvars, "inventory_hostname": name})
    except Exception as exc:
        return {"connection": kind, "error": str(exc)}
    args = [o.get("ssh_common_args") or "", o.get("ssh_extra_args") or ""]
    if "ansible_ssh_args" in hostvars:
        args.insert(0, o.get("ssh_args") or "")
    return {"connection": kind, "address": o.get("host"), "port": o.get("port"),
            "user": o.get("remote_user"), "key": o.get("private_key_file"), "args": args}

def ask(folder, inventory, patterns):
    os.chdir(folder)
    out = os.path.join(tempfile.mkdtemp(), "list.json")
    cli = InventoryCLI(["ansible-inventory", "-i", inventory, "--list", "--output", out])
    try:
        cli.run()
    except SystemExit:
        pass
    with open(out) as file:
        listed = json.load(file)
    unparsed = any("Unable to parse" in w for w in warned)
    selected = {}
    for pattern in patterns:
        try:
            selected[pattern] = [str(h) for h in CLI.get_host_list(cli.inventory, None, pattern)]
        except AnsibleError:
            selected[pattern] = []
    hostvars = listed.get("_meta", {}).get("hostvars", {})
    return {"list": listed, "unparsed": unparsed, "patterns": selected,
            "connections": {h: connection(h, hostvars.get(h, {})) for h in selected["all"]}}

request = json.load(sys.stdin)
children = {}
for name, args in request.items():
    if len(children) >= max(os.cpu_count() or 1, 2):
        pid, _ = os.wait()
        children.pop(pid)
    pid = os.fork()
    if pid == 0:
        try:
            answer = ask(*args)
        except BaseException as exc:
            answer = {"error": repr(exc)}
        with open(os.path.join(sys.argv[1], name + ".json"), "w") as file:
            json.dump(answer, file)
        os._exit(0)
    children[pid] = name
while children:
    pid, _ = os.wait()
    children.pop(pid)
'''


def _ansible_env(home: Path) -> dict[str, str]:
    """Ansible with an empty configuration, writing its ~/.ansible under `home`."""
    (home / "ansible.cfg").write_text("")
    return {**os.environ, "HOME": str(home), "ANSIBLE_CONFIG": str(home / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(home / "tmp")}


@pytest.fixture(scope="module")
def ansible(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Ansible's answers for every case, asked once per test run."""
    pytest.importorskip("ansible", reason="the conformance tests need ansible-core "
                                          "(pip install -e '.[test]')")
    home = tmp_path_factory.mktemp("ansible-home")  # Ansible writes ~/.ansible/tmp
    answers = tmp_path_factory.mktemp("ansible-answers")
    request = {name: [str(CORPUS / name), case["inventory"],
                      ["all", "ungrouped", *case.get("patterns", [])]]
               for name, case in CASES.items()}
    done = subprocess.run([sys.executable, "-c", ORACLE, str(answers)], input=json.dumps(request),
                          capture_output=True, text=True, env=_ansible_env(home), timeout=240,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return {name: json.loads((answers / f"{name}.json").read_text()) for name in CASES}


def _flat(listed: dict[str, Any], group: str) -> set[str]:
    entry = listed.get(group, {})
    found = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        found |= _flat(listed, child)
    return found


def _key_files(answer: dict[str, Any]) -> tuple[str, ...]:
    keys = [answer["key"]] if answer.get("key") else []
    for args in answer["args"]:
        words = shlex.split(args)
        for i, word in enumerate(words):
            if word == "-i" and i + 1 < len(words):
                keys.append(words[i + 1])
            elif word.startswith("-i") and len(word) > 2:
                keys.append(word[2:])
    return tuple(keys)


def _refusal_is_justified(reason: str, name: str, answer: dict[str, Any],
                          hostvars: dict[str, Any]) -> bool:
    """A host fleetexec refuses must be one Ansible reads as refusable: not SSH, a name
    that is none, a template or a secret in its variables, ssh options it does not take."""
    if "not SSH" in reason:
        return answer["connection"] not in ("ssh", "smart", "paramiko", "paramiko_ssh")
    if "is not a DNS name or IP address" in reason:
        try:
            check_hostname(name)
        except ValueError:
            return True
        return False
    if "Jinja2 template" in reason:
        return any("{{" in str(v) for v in answer.values())
    if "has a secret in" in reason:
        return reason.split("has a secret in ")[1].split()[0] in hostvars
    if "ssh option" in reason or "bastion" in reason:
        return any(answer.get("args") or ())
    return False


@functools.cache
def _judge(name: str, answers_json: str) -> dict[str, Any]:
    """How fleetexec's reading of case `name` compares with Ansible's answer."""
    case, answer = CASES[name], json.loads(answers_json)
    verdict: dict[str, Any] = {"problems": [], "patterns": Counter(), "hosts": Counter()}
    problems = verdict["problems"]
    cwd = os.getcwd()
    os.chdir(CORPUS / name)
    try:
        inv = load_inventory(case["inventory"])
    except InventoryError as exc:
        if answer["unparsed"] or "refusal_ok" in case:
            verdict["file"] = "refused, as allowed" if "refusal_ok" in case else (
                "refused, as Ansible does")
        else:
            problems.append(f"refused a file Ansible reads: {exc}")
        return verdict
    finally:
        os.chdir(cwd)
    if answer["unparsed"]:
        problems.append("read a file Ansible refuses")
        return verdict
    verdict["file"] = "read"
    assert isinstance(inv, AnsibleInventory)
    listed = answer["list"]
    if set(inv.names) != set(answer["patterns"]["all"]):
        problems.append(f"hosts differ: {sorted(set(inv.names) ^ set(answer['patterns']['all']))}")
    groups = {g for g in listed if g not in ("_meta", "all")}
    groups |= {g for g, members in inv.groups.items() if members and g != "all"}
    for group in sorted(groups):
        if _flat(listed, group) != set(inv.groups.get(group, ())):
            problems.append(f"group {group!r}: Ansible {sorted(_flat(listed, group))}, "
                            f"fleetexec {list(inv.groups.get(group, ()))}")
    hostvars = listed.get("_meta", {}).get("hostvars", {})
    for host, theirs in answer["connections"].items():
        if host in inv.refused:
            if _refusal_is_justified(inv.refused[host], host, theirs, hostvars.get(host, {})):
                verdict["hosts"]["refused"] += 1
            else:
                problems.append(f"refused {host!r} without cause: {inv.refused[host]}")
            continue
        mine = inv.hosts[host]
        expected = (theirs.get("address"), theirs.get("port"), theirs.get("user"),
                    _key_files(theirs) if "args" in theirs else None)
        if (mine.address, mine.port, mine.user, mine.key_files) == expected:
            verdict["hosts"]["agree"] += 1
        else:
            problems.append(f"host {host!r}: Ansible {expected}, fleetexec "
                            f"{(mine.address, mine.port, mine.user, mine.key_files)}")
    for pattern, hosts in answer["patterns"].items():
        try:
            chosen = inv.match(pattern)
        except InventoryError as exc:
            if not hosts:
                verdict["patterns"]["agree (both select nothing)"] += 1
            elif "implicit localhost" in str(exc) and hosts == [pattern]:
                verdict["patterns"]["refused (implicit localhost)"] += 1
            else:
                problems.append(f"pattern {pattern!r}: Ansible {hosts}, fleetexec: {exc}")
            continue
        if set(chosen) == set(hosts):
            verdict["patterns"]["agree"] += 1
        else:
            problems.append(f"pattern {pattern!r}: Ansible {hosts}, fleetexec {chosen}")
    return verdict


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_fleetexec_reads_each_inventory_as_ansible_does(name: str,
                                                        ansible: dict[str, Any]) -> None:
    answer = ansible[name]
    assert "error" not in answer, answer
    verdict = _judge(name, json.dumps(answer))
    assert verdict["problems"] == []


def test_agreement_figure(ansible: dict[str, Any]) -> None:
    if not CASES:
        pytest.skip("the conformance corpus is absent")
    files: Counter[str] = Counter()
    hosts: Counter[str] = Counter()
    patterns: Counter[str] = Counter()
    problems = 0
    for name in CASES:
        verdict = _judge(name, json.dumps(ansible[name]))
        files[verdict.get("file", "disagrees")] += 1
        hosts.update(verdict["hosts"])
        patterns.update(verdict["patterns"])
        problems += len(verdict["problems"])
    figure = (f"{len(CASES)} inventories: {dict(files)}; connection settings of "
              f"{sum(hosts.values())} hosts: {dict(hosts)}; {sum(patterns.values())} "
              f"patterns: {dict(patterns)}; disagreements: {problems}")
    print(figure)
    assert problems == 0, figure


def test_the_oracle_answers_as_the_ansible_commands_do(ansible: dict[str, Any],
                                                       tmp_path: Path) -> None:
    """The in-process answers are those of `ansible-inventory --list` and `ansible
    --list-hosts` run as commands (checked on one case: each start costs half a second)."""
    name = "probe-alias-precedence-ini"
    if name not in CASES:
        pytest.skip(f"the corpus has no {name}")
    env = _ansible_env(tmp_path)
    bin_dir = Path(sys.executable).parent
    listed = subprocess.run([str(bin_dir / "ansible-inventory"), "-i", "hosts", "--list"],
                            cwd=CORPUS / name, capture_output=True, text=True, env=env,
                            check=True, timeout=60)
    assert json.loads(listed.stdout) == ansible[name]["list"]
    shown = subprocess.run([str(bin_dir / "ansible"), "-i", "hosts", "web[0:1]", "--list-hosts"],
                           cwd=CORPUS / name, capture_output=True, text=True, env=env,
                           check=True, timeout=60)
    assert shown.stdout.split()[2:] == ansible[name]["patterns"]["web[0:1]"] == ["web1", "web2"]
