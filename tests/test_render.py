"""Tests for fleetexec.render: exact text of every view, the sanitiser, the JSON."""

from __future__ import annotations

import base64
import json
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetexec import render
from fleetexec.host import Host
from fleetexec.render import (
    render_gathered,
    render_hosts,
    render_json,
    render_jsonl_line,
    render_progress_line,
    render_summary,
    render_table,
    result_to_dict,
    sanitize,
    terminal,
)
from fleetexec.results import FleetResult, HostResult, Status


def fleet(*results: HostResult, wall_time: float = 1.84, interrupted: bool = False) -> FleetResult:
    return FleetResult({r.host: r for r in results}, wall_time=wall_time, interrupted=interrupted)


WEB01 = HostResult("web01", Status.OK, 0, stdout=b"up 3 days\nload 0.1\n", duration=0.123)
WEB02 = HostResult("web02", Status.OK, 0, stdout=b"up 3 days\nload 0.1\n", duration=0.2)
WEB03 = HostResult("web03", Status.FAILED, 1, stderr=b"no such file\x1b[2J\n", duration=1.5)
WEB04 = HostResult("web04", Status.KILLED, signal="KILL", stdout=b"x" * 100,
                   stdout_truncated=True, duration=3.0)
DB1 = HostResult("db1", Status.UNREACHABLE, error="connection refused", duration=0.05)
MIXED = fleet(WEB01, WEB02, WEB03, WEB04, DB1, wall_time=3.214)


# --- sanitiser -----------------------------------------------------------------

SANITIZE_CASES = [
    # (input, expected) -- multi-line mode
    (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # ESC / CSI SGR
    (b"\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # clear screen, cursor home
    (b"\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC 0: window title, BEL-terminated
    (b"\x1b]52;c;aWQK\x07", "\\x1b]52;c;aWQK\\x07"),  # OSC 52: write the clipboard
    (b"\x1b]8;;http://evil/\x1b\\safe\x1b]8;;\x1b\\",  # OSC 8 hyperlink, ST-terminated
     "\\x1b]8;;http://evil/\\x1b\\safe\\x1b]8;;\\x1b\\"),
    (b"\x1b[6n", "\\x1b[6n"),  # CSI 6 n: terminal answers on stdin
    (b"\x1b[21t", "\\x1b[21t"),  # CSI 21 t: report title
    (b"\xc2\x9b6n", "\\x9b6n"),  # C1 CSI U+009B, encoded as UTF-8
    (b"\x9b6n", "\\x9b6n"),  # C1 CSI as the raw 8-bit byte (invalid UTF-8)
    (b"\xc2\x9d0;t\xc2\x9c", "\\x9d0;t\\x9c"),  # C1 OSC ... ST
    ("abc\u202edcba".encode(), "abc\\u202edcba"),  # right-to-left override
    ("a\u2066b\u2069c\u200bd\ufeffe".encode(), "a\\u2066b\\u2069c\\u200bd\\ufeffe"),
    ("tag\U000e0041".encode(), "tag\\U000e0041"),  # invisible tag character
    ("line\u2028sep".encode(), "line\\u2028sep"),
    (b"nul\x00", "nul\\x00"),
    (b"back\x08\x08x", "back\\x08\\x08x"),  # BS can overprint
    (b"safe\rEVIL", "safe\\rEVIL"),  # lone CR would overwrite the line
    (b"crlf\r\nline\r\n", "crlf\nline\n"),  # CRLF is just a line end
    (b"del\x7f", "del\\x7f"),
    (b"bell\x07 vt\x0b ff\x0c", "bell\\x07 vt\\x0b ff\\x0c"),
    (b"\xff\xfebad", "\\xff\\xfebad"),  # invalid UTF-8 shown as bytes
    (b"cut\xe2\x82", "cut\\xe2\\x82"),  # truncated multi-byte sequence
    ("héllo ✓ 日本\n\tindented".encode(), "héllo ✓ 日本\n\tindented"),  # untouched
    ("lone\udc9b", "lone\\x9b"),  # str with a surrogateescape'd byte
    ("lone\ud800", "lone\\ud800"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "expected"), SANITIZE_CASES)
def test_sanitize_table(raw: str | bytes, expected: str) -> None:
    assert sanitize(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a\nb\tc", "a\\nb\\tc"),
        (b"crlf\r\n", "crlf\\r\\n"),
        ("x\x1b]0;t\x07\u202e", "x\\x1b]0;t\\x07\\u202e"),
        (b"\x9b", "\\x9b"),
    ],
)
def test_sanitize_single_line(raw: str | bytes, expected: str) -> None:
    assert sanitize(raw, single_line=True) == expected


def test_sanitize_is_idempotent_on_its_output() -> None:
    once = sanitize(b"\x1b[31m\xff\r\n\x00\r" + "\u202e\t".encode())
    assert sanitize(once) == once


def test_escape_table_covers_every_code_point() -> None:
    # The table scans planes 0, 1 and 14 only; a newer Unicode must not slip past.
    unsafe = {
        cp for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Cs", "Zl", "Zp")
    }
    assert set(terminal._table(True)) == unsafe
    assert set(terminal._table(False)) == unsafe - {ord("\n"), ord("\t")}


def test_sanitize_handles_a_mebibyte_of_hostile_bytes() -> None:
    # Correctness at size only: a timed assert fails on a loaded machine (speed is bench's).
    hostile = (b"\x1b[31mred\x1b[0m \xc2\x9b \xff " + "\u202e".encode() + b"\n") * 40_000
    out = sanitize(hostile)
    assert "\x1b" not in out and "\u202e" not in out and "\x9b" not in out
    assert out.count("\n") == 40_000


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_sanitize_bytes_leaves_no_controls(data: bytes) -> None:
    for single_line, allowed in ((False, "\n\t"), (True, "")):
        out = sanitize(data, single_line=single_line)
        bad = [c for c in out if unicodedata.category(c) in ("Cc", "Cf") and c not in allowed]
        assert not bad


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=200))
def test_sanitize_text_leaves_no_controls(text: str) -> None:
    out = sanitize(text)
    assert not [c for c in out if unicodedata.category(c) in ("Cc", "Cf", "Cs") and c not in "\n\t"]


# --- table -------------------------------------------------------------------------

def test_render_table_exact() -> None:
    assert render_table(MIXED) == "\n".join([
        "host    status       exit      duration    output",
        "------  -----------  --------  ----------  " + "-" * 60,
        "web01   ok           0         0.12s       load 0.1",
        "web02   ok           0         0.20s       load 0.1",
        "web03   failed       1         1.50s       stderr: no such file\\x1b[2J",
        "web04   killed       sig KILL  3.00s       " + "x" * 47 + "… [truncated]",
        "db1     unreachable  -         0.05s       connection refused",
    ])


def test_render_table_cuts_to_width_and_escapes_cells() -> None:
    r = HostResult("h1", Status.NO_EXIT_STATUS, stdout=b"first\n\tlast \x1b]0;t\x07 line\n\n",
                   duration=0.004)
    assert render_table(fleet(r), width=12) == "\n".join([
        "host    status          exit    duration    output",
        "------  --------------  ------  ----------  ------------",
        "h1      no_exit_status  -       0.00s       last \\x1b]0…",
    ])


def test_render_table_empty_output_and_empty_fleet() -> None:
    r = HostResult("h1", Status.OK, 0, duration=1)
    assert render_table(fleet(r)) == "\n".join([
        "host    status    exit    duration    output",
        "------  --------  ------  ----------  --------",
        "h1      ok        0       1.00s",
    ])
    assert render_table(fleet()).splitlines()[0].split() == [
        "host", "status", "exit", "duration", "output"]


def test_render_table_excerpt_escapes_tab_and_ignores_crlf() -> None:
    r = HostResult("h1", Status.OK, 0, stdout=b"first\r\nkey\tvalue\r\n \r\n", duration=0.5)
    last_row = render_table(fleet(r)).splitlines()[-1]
    assert last_row == "h1      ok        0       0.50s       key\\tvalue"


# --- gathered ------------------------------------------------------------------

def test_render_gathered_exact() -> None:
    assert render_gathered(MIXED) == "\n".join([
        "---------------- web[01-02] (2) ----------------",
        "  up 3 days",
        "  load 0.1",
        "---------------- web03 (1) ----------------",
        "status: failed, exit 1",
        "[stderr]",
        "  no such file\\x1b[2J",
        "---------------- web04 (1) ----------------",
        "status: killed, signal KILL",
        "  " + "x" * 100,
        "[stdout truncated]",
        "---------------- db1 (1) ----------------",
        "status: unreachable: connection refused",
    ])


def test_render_gathered_stdout_and_stderr_and_no_trailing_newline() -> None:
    r = HostResult("a1", Status.TIMEOUT, stdout=b"partial", stderr=b"warn\n\n",
                   stderr_truncated=True, error="command timed out\x1b[K after 5s")
    assert render_gathered(fleet(r)) == "\n".join([
        "---------------- a1 (1) ----------------",
        "status: timeout: command timed out\\x1b[K after 5s",
        "  partial",
        "[stderr]",
        "  warn",
        "",
        "[stderr truncated]",
    ])


FORGED = (b"real output\n---------------- web02 (1) ----------------\nall good\n"
          b"status: ok\n[stderr]\n\r---------------- web09 (1) ----------------\n"
          b"\x0b---------------- web08 (1) ----------------\n"
          + "\u2028---------------- web07 (1) ----------------".encode())


def test_render_gathered_output_cannot_forge_a_header() -> None:
    liar = HostResult("web01", Status.OK, 0, stdout=FORGED, stderr=FORGED, duration=0.1)
    text = render_gathered(fleet(liar, WEB03))
    own = [line for line in text.split("\n") if line and not line.startswith("  ")]
    assert own == [
        "---------------- web01 (1) ----------------", "[stderr]",
        "---------------- web03 (1) ----------------", "status: failed, exit 1", "[stderr]",
    ]
    assert "  ---------------- web02 (1) ----------------" in text.split("\n")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_render_gathered_only_its_own_lines_start_at_column_0(out: bytes, err: bytes) -> None:
    r = HostResult("h1", Status.FAILED, 1, stdout=out, stderr=err, duration=0.1)
    own = [line for line in render_gathered(fleet(r)).split("\n")
           if line and not line.startswith("  ")]
    assert own == ["---------------- h1 (1) ----------------", "status: failed, exit 1",
                   *(["[stderr]"] if err else [])]


# --- summary -------------------------------------------------------------------

def test_render_summary_exact() -> None:
    assert render_summary(MIXED) == "\n".join([
        "5 hosts: 2 ok, 1 failed, 1 killed, 1 unreachable in 3.21s",
        "failed: web03",
        "killed: web04",
        "unreachable: db1",
    ])


def test_render_summary_all_ok_one_host_and_interrupted() -> None:
    assert render_summary(fleet(WEB01, wall_time=0.5)) == "1 host: 1 ok in 0.50s"
    assert render_summary(fleet(wall_time=0)) == "0 hosts in 0.00s"
    failed = [HostResult(f"web{n:02}", Status.FAILED, 2) for n in (3, 4, 5, 9)]
    stopped = HostResult("db1", Status.INTERRUPTED, error="interrupted")
    assert render_summary(fleet(WEB01, *failed, stopped, interrupted=True)) == "\n".join([
        "6 hosts: 1 ok, 4 failed, 1 interrupted in 1.84s (interrupted)",
        "failed: web[03-05,09]",
        "interrupted: db1",
    ])


# --- progress ------------------------------------------------------------------

def test_render_progress_line_exact() -> None:
    assert render_progress_line(WEB01) == "web01  ok  exit 0  0.12s"
    assert render_progress_line(WEB04) == "web04  killed  sig KILL  3.00s  [truncated]"
    aligned = render_progress_line(DB1, host_width=6)
    assert aligned == "db1     unreachable  0.05s  connection refused"
    evil = HostResult("h1", Status.ERROR, error="bad\n\x1b]0;x\x07" + "e" * 100, duration=2)
    line = render_progress_line(evil)
    assert line == "h1  error  2.00s  bad\\n\\x1b]0;x\\x07" + "e" * 62 + "…"
    assert "\n" not in line


# --- hosts ---------------------------------------------------------------------

def test_render_hosts_exact() -> None:
    hosts = [
        Host("web1", user="deploy", key_files=("~/.ssh/a", "~/.ssh/b"), connect_timeout=5.0,
             command_timeout=60, known_hosts_file="kh", groups=("web", "prod")),
        Host("db1", address="10.0.0.7", port=2222),
    ]
    assert render_hosts(hosts) == "\n".join([
        "name    address    port    user    key files          connect timeout    "
        "command timeout    known_hosts    groups",
        "------  ---------  ------  ------  -----------------  -----------------  "
        "-----------------  -------------  --------",
        "web1    web1       -       deploy  ~/.ssh/a,~/.ssh/b  5s                 "
        "60s                kh             web,prod",
        "db1     10.0.0.7   2222    -       -                  -                  "
        "-                  -              -",
    ])


def test_render_hosts_sanitises_paths_and_groups() -> None:
    text = render_hosts([Host("h1", key_files=("/k\x1b[2J",), groups=("g\u202e",))])
    assert "\x1b" not in text and "\u202e" not in text
    assert "/k\\x1b[2J" in text and "g\\u202e" in text


# --- JSON ----------------------------------------------------------------------

def _bytes_back(d: dict[str, object], stream: str) -> bytes:
    b64 = d[f"{stream}_b64"]
    if b64 is None:
        text = d[stream]
        assert isinstance(text, str)
        return text.encode("utf-8")
    assert isinstance(b64, str)
    return base64.b64decode(b64)


def test_json_binary_output_round_trips() -> None:
    raw = b"\x00\xff\xfe\x1b[31m\x9bbin\x80"
    r = HostResult("h1", Status.OK, 0, stdout=raw, stderr=b"fine\n", started=1700000000.25,
                   duration=0.5)
    d = json.loads(render_jsonl_line(r))
    assert d["stdout"] == raw.decode("utf-8", "replace") and "\ufffd" in d["stdout"]
    assert _bytes_back(d, "stdout") == raw
    assert d["stderr_b64"] is None and _bytes_back(d, "stderr") == b"fine\n"


def test_json_escapes_are_json_escaped_not_raw() -> None:
    r = HostResult("h1", Status.FAILED, 1, stdout="\x1b]0;t\x07 \u202e \x7f \xc2\x9b".encode(),
                   error="boom")
    line = render_jsonl_line(r)
    assert "\\u001b" in line and "\\u202e" in line and "\\u007f" in line
    assert "\x1b" not in line and "\n" not in line
    assert all(" " <= c <= "~" for c in line)  # printable ASCII: safe even on a terminal
    d = json.loads(line)
    assert d["stdout"].startswith("\x1b]0;t\x07")  # lossless, not sanitised
    assert d["stdout_b64"] is None


def test_json_empty_output_and_full_schema() -> None:
    r = HostResult("h1", Status.UNREACHABLE, error="refused\udc9b", duration=0.1234567)
    assert result_to_dict(r) == {
        "host": "h1", "status": "unreachable", "exit_code": None, "signal": None,
        "stdout": "", "stderr": "", "stdout_b64": None, "stderr_b64": None,
        "stdout_truncated": False, "stderr_truncated": False, "truncated": False,
        "started": 0.0, "duration": 0.123457, "error": "refused\ufffd",
    }
    json.loads(render_jsonl_line(r))


def test_render_json_document() -> None:
    doc = json.loads(render_json(MIXED))
    assert [h["host"] for h in doc["hosts"]] == ["web01", "web02", "web03", "web04", "db1"]
    assert doc["hosts"][3]["signal"] == "KILL" and doc["hosts"][3]["truncated"] is True
    assert doc["summary"] == {
        "total": 5,
        "counts": {"ok": 2, "failed": 1, "killed": 1, "unreachable": 1},
        "wall_time": 3.214,
        "exit_code": 3,
        "interrupted": False,
    }


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512), st.binary(max_size=64))
def test_json_always_valid_and_lossless(out: bytes, err: bytes) -> None:
    r = HostResult("h1", Status.OK, 0, stdout=out, stderr=err)
    doc = json.loads(render_json(fleet(r)))
    assert _bytes_back(doc["hosts"][0], "stdout") == out
    assert _bytes_back(doc["hosts"][0], "stderr") == err
    assert _bytes_back(json.loads(render_jsonl_line(r)), "stdout") == out



@pytest.mark.parametrize("count", [0, 1, 3])
def test_streamed_json_is_byte_identical_to_one_json_dumps(count: int) -> None:
    from fleetexec.render import iter_json, result_to_dict

    hosts = [HostResult(f"h{i}", Status.FAILED, 1, stdout=b"line\n\x1b[2J" * i,
                        stderr=b"\xff\x00") for i in range(count)]
    fleet = FleetResult({h.host: h for h in hosts}, wall_time=2.5)
    document = {"hosts": [result_to_dict(h) for h in hosts], "summary": {
        "total": count, "counts": {str(s): n for s, n in fleet.counts().items()},
        "wall_time": 2.5, "exit_code": fleet.exit_code, "interrupted": False}}
    assert "".join(iter_json(fleet)) == json.dumps(document, indent=2, ensure_ascii=True)


def test_streamed_json_of_large_and_shared_outputs_is_byte_identical() -> None:
    from fleetexec.render import iter_json, result_to_dict

    shared = b"0123456789\n\x1b[2J" * 1000  # one object, as the Collector shares it
    hosts = [HostResult("a", Status.OK, 0, stdout=shared, stderr=b"e" * 5000),
             HostResult("b", Status.OK, 0, stdout=shared),
             HostResult("c", Status.FAILED, 1, stdout=b"\xff" * 5000, stderr=shared),
             HostResult("d", Status.OK, 0, stdout=bytes(shared)),  # equal, not shared
             HostResult("e", Status.OK, 0, stdout=b'"stdout": null,\n' * 400)]
    fleet = FleetResult({h.host: h for h in hosts}, wall_time=1.0)
    document = {"hosts": [result_to_dict(h) for h in hosts], "summary": {
        "total": 5, "counts": {str(s): n for s, n in fleet.counts().items()},
        "wall_time": 1.0, "exit_code": fleet.exit_code, "interrupted": False}}
    assert "".join(iter_json(fleet)) == json.dumps(document, indent=2, ensure_ascii=True)


# --- diff ----------------------------------------------------------------------------

def test_render_diff_exact() -> None:
    web05 = HostResult("web05", Status.OK, 0, stdout=b"up 4 days\nload 0.1\n", duration=0.1)
    assert render.render_diff(fleet(WEB01, WEB02, WEB03, web05)) == "\n".join([
        render_gathered(fleet(WEB01, WEB02, WEB03, web05)),
        "",
        "--- web[01-02] (2)",
        "+++ web03 (1)",
        "@@ -1,2 +1,3 @@",
        "-  up 3 days",
        "-  load 0.1",
        "+status: failed, exit 1",
        "+[stderr]",
        "+  no such file\\x1b[2J",
        "",
        "--- web[01-02] (2)",
        "+++ web05 (1)",
        "@@ -1,2 +1,2 @@",
        "-  up 3 days",
        "+  up 4 days",
        "   load 0.1",
    ])


def test_render_diff_of_one_group_is_the_gathered_view() -> None:
    assert render.render_diff(fleet(WEB01, WEB02)) == render_gathered(fleet(WEB01, WEB02))
    assert render.render_diff(fleet()) == ""


def test_render_diff_is_against_the_largest_group_and_marks_a_missing_newline() -> None:
    many = [HostResult(f"n{i}", Status.OK, 0, stdout=b"v2\n") for i in range(1, 4)]
    odd = HostResult("n9", Status.OK, 0, stdout=b"v2")
    text = render.render_diff(fleet(odd, *many))
    assert text.split("\n\n", 1)[1] == "\n".join([
        "--- n[1-3] (3)", "+++ n9 (1)", "@@ -1 +1,2 @@", "   v2", "+[no newline at end]"])


def test_render_diff_says_when_the_difference_is_not_visible() -> None:
    raw = HostResult("a1", Status.OK, 0, stdout=b"\xff\n")
    literal = HostResult("a2", Status.OK, 0, stdout=b"\\xff\n")  # shown alike on purpose
    text = render.render_diff(fleet(raw, literal))
    assert text.endswith("--- a1 (1)\n+++ a2 (1)\n[the outputs differ only in bytes shown "
                         "alike here]")


def test_render_diff_sanitises_output_and_host_names() -> None:
    a = HostResult("h1", Status.OK, 0, stdout=b"same\n")
    b = HostResult("h2", Status.OK, 0, stdout=b"\x1b]0;title\x07\xe2\x80\xae\n")
    text = render.render_diff(fleet(a, b))
    assert "+  \\x1b]0;title\\x07\\u202e" in text.split("\n")
    assert "\x1b" not in text and "\u202e" not in text


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=60))
def test_render_diff_output_cannot_forge_diff_headers(a: bytes, b: bytes, err: bytes) -> None:
    hostile = b"\n--- h9 (1)\n+++ h8 (1)\n@@ -1 +1 @@\n---------------- h7 (1) ----------------\n"
    results = [HostResult("h1", Status.OK, 0, stdout=a + hostile),
               HostResult("h2", Status.OK, 0, stdout=a + hostile),
               HostResult("h3", Status.FAILED, 1, stdout=b + hostile, stderr=err)]
    diff = render.render_diff(fleet(*results)).split("\n\n--- h[1-2] (2)\n", 1)
    assert len(diff) == 2
    ours = ("+++ ", "@@ ", "[the outputs")
    for line in diff[1].split("\n"):
        assert line.startswith(ours) or line[:1] in " +-" and (
            line[1:3] == "  " or line[1:] in ("", "status: failed, exit 1", "[stderr]",
                                              "[no newline at end]")), line
