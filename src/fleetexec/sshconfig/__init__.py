"""The OpenSSH client configuration (ssh_config(5)), read the way `ssh` reads it.

This package owns everything fleetexec knows about `~/.ssh/config` and
`/etc/ssh/ssh_config`: which files are read, how their lines are lexed, which
`Host`/`Match` blocks apply to a host, how tokens expand, and what each
keyword's value becomes in a `HostConfig`; and, for the default identity files,
what can be learned without paramiko.

Pure standard library, imported by the parent process (which never imports
paramiko): `resolve.py` looks each host up here, by the name it was given.
The rules are OpenSSH 9's, checked against `ssh -G` by tests/test_ssh_config.py.
Only commands written in the configuration files are ever run (`Match exec`),
each distinct command once per lookup session (`SshConfig`).

Modules, in the order a lookup uses them:

* `reader`: the files (`-F`, permissions) and lines (keywords, quotes, comments).
* `matching`: `Host`, `Match` (incl. `exec` and the final pass) and `Include`.
* `keywords`: which keywords are honoured, noted, or quietly ignored.
* `values`: collecting the lines that apply and turning them into a `HostConfig`.
* `tokens`: `%` tokens, `${VAR}` and `~`.
* `keys`: the default identity files, read without paramiko.
* `lookup`: `SshConfig`, which ties these together for one `resolve()` call.
"""

from __future__ import annotations

from .keys import DEFAULT_IDENTITY_FILES, identity_file_problem, public_key_blob
from .lookup import SshConfig
from .matching import EXEC_TIMEOUT
from .reader import default_config_files
from .tokens import expand_proxy_command
from .values import HostConfig

__all__ = ["DEFAULT_IDENTITY_FILES", "EXEC_TIMEOUT", "HostConfig", "SshConfig",
           "default_config_files", "expand_proxy_command", "identity_file_problem",
           "public_key_blob"]
