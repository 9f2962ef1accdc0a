"""Host ranges: `expand` and `fold`, round trips and malformed input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetexec.hostrange import expand, fold


def _expand_all(folded: str) -> list[str]:
    """Expand a comma list of ranges (commas inside `[...]` belong to the range)."""
    return [n for part in re.split(r",(?![^\[\]]*\])", folded) if part for n in expand(part)]


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("web1", ["web1"]),
        ("web[1-3]", ["web1", "web2", "web3"]),
        ("web[01-03]", ["web01", "web02", "web03"]),
        ("web[8-11]", ["web8", "web9", "web10", "web11"]),
        ("web[098-101]", ["web098", "web099", "web100", "web101"]),
        ("db[1-3,7]", ["db1", "db2", "db3", "db7"]),
        ("db[1, 3]", ["db1", "db3"]),
        ("r[1-2]n[1-2].dc", ["r1n1.dc", "r1n2.dc", "r2n1.dc", "r2n2.dc"]),
        ("[1-2].example.com", ["1.example.com", "2.example.com"]),
        ("web[5]", ["web5"]),
        ("web[0-1]", ["web0", "web1"]),
    ],
)
def test_expand(pattern: str, names: list[str]) -> None:
    assert expand(pattern) == names


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("web[1-3", "unbalanced bracket in 'web[1-3'"),
        ("web1-3]", "unbalanced bracket in 'web1-3]'"),
        ("web]1[", "unbalanced bracket in 'web]1['"),
        ("web[[1-3]]", "unbalanced bracket in 'web[[1-3]]'"),
        ("web[]", "bad range '[]' in 'web[]': use [1-5], [01-20] or [1,3,7-9]"),
        ("web[a-c]", "bad range '[a-c]' in 'web[a-c]': use [1-5], [01-20] or [1,3,7-9]"),
        ("web[1-]", "bad range '[1-]' in 'web[1-]': use [1-5], [01-20] or [1,3,7-9]"),
        ("web[-1]", "bad range '[-1]' in 'web[-1]': use [1-5], [01-20] or [1,3,7-9]"),
        ("web[1,,2]", "bad range '[1,,2]' in 'web[1,,2]': use [1-5], [01-20] or [1,3,7-9]"),
        ("web[1-2-3]", "bad range '[1-2-3]' in 'web[1-2-3]': use [1-5], [01-20] or [1,3,7-9]"),
        ("web[١-٣]", "bad range '[١-٣]' in 'web[١-٣]': use [1-5], [01-20] or [1,3,7-9]"),
        ("w[1\n-2]", "bad range '[1\\n-2]' in 'w[1\\n-2]': use [1-5], [01-20] or [1,3,7-9]"),
        ("web[5-1]", "bad range '[5-1]' in 'web[5-1]': 5 > 1"),
        ("w[1-200000]", "'w[1-200000]' expands to more than 100000 names"),
        ("w[1-1000][1-1000]", "'w[1-1000][1-1000]' expands to more than 100000 names"),
        ("w[" + ",".join(["1-90000"] * 50) + "]", "expands to more than 100000 names"),
        ("w[" + "9" * 5000 + "]", "bad range"),
    ],
)
def test_malformed_ranges(pattern: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        expand(pattern)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("names", "folded"),
    [
        (["web01", "web02", "web03", "db1"], "db1,web[01-03]"),
        (["web1", "web2", "web3", "web5"], "web[1-3,5]"),
        (["web1"], "web1"),
        (["web2", "web1", "web2"], "web[1-2]"),
        (["lb", "web1"], "lb,web1"),
        (["r1n1", "r1n2"], "r1n[1-2]"),
        (["a1.dc", "a2.dc"], "a[1-2].dc"),
        ([], ""),
    ],
)
def test_fold(names: list[str], folded: str) -> None:
    assert fold(names) == folded


@pytest.mark.parametrize(
    "pattern", ["web[01-20]", "db[1-3,7,9-12]", "web[8-11]", "x[098-101].dc", "a,b[1-2]"]
)
def test_fold_of_expand_round_trips(pattern: str) -> None:
    names = _expand_all(pattern)
    assert sorted(_expand_all(fold(names))) == sorted(names)


_name = st.from_regex(r"[a-z]{1,4}(-?[0-9]{1,3})?(\.[a-z]{1,3})?", fullmatch=True)


@given(st.lists(_name, max_size=30))
def test_fold_then_expand_gives_back_the_same_names(names: list[str]) -> None:
    assert sorted(_expand_all(fold(names))) == sorted(set(names))


@given(st.text(alphabet="ab01-[],9", max_size=20))
def test_expand_only_raises_value_error(pattern: str) -> None:
    try:
        names = expand(pattern)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert names and all("[" not in n and "]" not in n for n in names)
