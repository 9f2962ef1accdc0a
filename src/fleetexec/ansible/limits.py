"""Bounds on the work an Ansible inventory can cause, as in the inventory package."""

from __future__ import annotations

MAX_BYTES = 4 << 20  # one inventory or vars file
MAX_VARS_BYTES = 64 << 20  # all group_vars/ and host_vars/ files together
MAX_VARS_FILES = 20_000
MAX_VARS_DEPTH = 16  # directories inside group_vars/NAME/
MAX_NODES = 250_000  # YAML nodes per file
MAX_DEPTH = 64  # YAML nesting (Ansible's groups nest through `children`)
MAX_WORK = 1_000_000  # YAML nodes visited, aliases and merge keys counted each time
MAX_HOSTS = 100_000
MAX_NAMES = 250_000  # host names produced by all patterns, repeats counted
MAX_GROUPS = 50_000
MAX_MEMBERSHIPS = 2_000_000  # (host or group, group) pairs, children flattened
MAX_VALUE = 4096  # characters of a connection setting
MAX_TERM = 1000  # characters of one host pattern term
