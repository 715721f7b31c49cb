"""Remote text cut to its limits, lone surrogates escaped, nesting measured without recursion."""

from __future__ import annotations

import json

import pytest

from airflow_provider_cfworkflows.remote_text import (
    bounded,
    bounded_list,
    escape_lone_surrogates,
    escape_surrogates_in_text,
    nested_deeper_than,
)


def nested(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def test_bounded_keeps_short_text_and_says_how_much_it_cut():
    assert bounded("short", 5) == "short"
    assert bounded("x" * 2_000_000, 10) == "x" * 10 + "… (1999990 more characters cut)"


def test_bounded_shows_other_values_as_a_short_repr_whatever_their_depth():
    assert bounded(None, 10) == "None"
    assert bounded({"a": 1}, 100) == "{'a': 1}"
    shown = bounded(nested(100_000), 100)  # repr() itself would exceed the recursion limit
    assert shown.startswith("[[[")
    assert len(shown) < 100


def test_bounded_list_says_how_many_more():
    assert bounded_list(["a", "b"], 2, "steps") == ["a", "b"]
    assert bounded_list([str(n) for n in range(40_000)], 3, "steps") == [
        "0",
        "1",
        "2",
        "… and 39997 more steps",
    ]


def test_lone_surrogates_in_text_become_their_escape():
    assert escape_surrogates_in_text("cut \ud83d, \udfff") == "cut \\ud83d, \\udfff"
    assert escape_surrogates_in_text("whole 😀") == "whole 😀"
    assert bounded("cut \ud83d", 100).encode("utf-8") == b"cut \\ud83d"


def test_lone_surrogates_in_a_json_value_become_the_characters_of_their_escape():
    value = {"text": "cut \ud83d", "k\udfff": ["\ud800 and \\ud800", "😀"]}

    escaped, count = escape_lone_surrogates(value)

    assert count == 3
    assert escaped == {"text": "cut \\ud83d", "k\\udfff": ["\\ud800 and \\ud800", "😀"]}
    json.dumps(escaped, ensure_ascii=False).encode("utf-8")  # encodable now
    assert escape_lone_surrogates(value["k\udfff"][1]) == ("😀", 0)
    untouched = {"a": [1, 2.5, None, True]}
    assert escape_lone_surrogates(untouched)[0] is untouched


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("s", 0), ([], 1), ({}, 1), ({"a": [1]}, 2), ([[], [[{}]]], 4), (nested(5000), 5000)],
)
def test_nesting_depth(value, depth):
    assert not nested_deeper_than(value, depth)
    if depth:
        assert nested_deeper_than(value, depth - 1)
