"""group_vars/ and host_vars/ next to an inventory file, found as Ansible finds them.

For each group and host: the first of `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json` that
exists, a directory `NAME/` being read whole (sorted). A vault-encrypted file is noted, not
read: a host taking variables from it is refused when settled. The files are bounded in
number, size and nesting.
"""

from __future__ import annotations

import os

from .data import Builder
from .limits import MAX_BYTES, MAX_VARS_BYTES, MAX_VARS_DEPTH, MAX_VARS_FILES
from .records import Var
from .yaml_reader import YAML_EXTENSIONS, read_vars

__all__ = ["read_vars_files"]


def read_vars_files(builder: Builder) -> None:
    """Read group_vars/ and host_vars/ next to the inventory file into `builder.files`."""
    if builder.path == "<string>":
        return
    base = os.path.realpath(os.path.dirname(os.path.abspath(builder.path)))
    for kind, names in (("group_vars", list(builder.groups)), ("host_vars", list(builder.hosts))):
        folder = os.path.join(base, kind)
        if not os.path.isdir(folder):
            continue
        for name in names:
            if any(c in name for c in "/\\\0") or name in (".", ".."):
                continue  # such a host is refused anyway (not a host name)
            found = _files(builder, os.path.join(folder, name))
            variables: dict[str, Var] = {}
            vault = None
            for file in found:
                vault = vault or _read(builder, file, variables)
            builder.files[(kind, name)] = (variables, vault)


def _files(builder: Builder, stem: str) -> list[str]:
    for extension in ("", *YAML_EXTENSIONS):
        candidate = stem + extension
        if os.path.exists(candidate):
            if os.path.isdir(candidate):
                return _folder(builder, candidate, 0)
            return [candidate]
    return []


def _folder(builder: Builder, folder: str, depth: int) -> list[str]:
    if depth > MAX_VARS_DEPTH:
        builder.fail(None, f"{folder}: directories nested too deeply")
    found: list[str] = []
    for entry in sorted(os.listdir(folder)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        extension = os.path.splitext(entry)[1]
        full = os.path.join(folder, entry)
        if os.path.isdir(full) and not extension:
            found.extend(_folder(builder, full, depth + 1))
        elif os.path.isfile(full) and extension in ("", *YAML_EXTENSIONS):
            found.append(full)
    return found


def _read(builder: Builder, file: str, variables: dict[str, Var]) -> str | None:
    """Add one vars file's settings to `variables`; its name if it is vault-encrypted."""
    builder.files_read += 1
    if builder.files_read > MAX_VARS_FILES:
        builder.fail(None, f"more than {MAX_VARS_FILES} group_vars/host_vars files")
    try:
        with open(file, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        builder.fail(None, f"cannot read it: {exc.strerror or exc}", path=file)
    builder.vars_bytes += len(data)
    if len(data) > MAX_BYTES or builder.vars_bytes > MAX_VARS_BYTES:
        builder.fail(None, "vars files too large", path=file)
    if data.startswith(b"$ANSIBLE_VAULT;"):
        return file
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        builder.fail(data.count(b"\n", 0, exc.start) + 1, "not valid UTF-8", path=file)
    read_vars(builder, text, file, variables)
    return None
