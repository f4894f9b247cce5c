"""The one naming rule for model names: 1-40 characters of a DNS-1035 label, and the names suggested as fixes."""

from __future__ import annotations

import re

import pytest

from hybridml.core.naming import MAX_NAME_LENGTH, RULE, check_model_name, suggest_model_name
from hybridml.errors import InvalidInputError


def test_the_limit_is_40_characters_and_the_rule_says_so() -> None:
    assert MAX_NAME_LENGTH == 40
    assert RULE.startswith("1-40 characters of lower-case letters, digits and '-', starting with a letter")


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "m1",
        "a-b",
        "a--b",  # consecutive dashes are still a DNS-1035 label
        "hybridml-model",
        "model-2024-v3",
        "a" * 40,
        "a" + "-b" * 19 + "c",  # 40 characters with dashes inside
        "z" + "9" * 39,
    ],
)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert check_model_name(name) is name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 41,  # one over the limit
        "a" * 63,  # a valid Kubernetes label, but no room for KServe and SageMaker suffixes
        "My Model",
        "Model",
        "modeL",
        "model_1",
        "m.v2",
        "9lives",
        "1",
        "-m",
        "m-",
        "x-",
        "-",
        "a b",
        " a",
        "a ",
        "a/b",
        "ab\u00e9",
        "\u0430b",  # Cyrillic a
    ],
)
def test_invalid_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        check_model_name(name)
    assert str(refused.value) == f"invalid model name {name!r}: use {RULE}"


# A regex ending in '$' also matches before a final newline: 'a\n' was once accepted.
@pytest.mark.parametrize("name", ["a\n", "hybridml-model\n"])
def test_a_name_ending_in_a_newline_is_refused(name: str) -> None:
    with pytest.raises(InvalidInputError):
        check_model_name(name)


@pytest.mark.parametrize("name", [None, 1, 1.5, b"model", ["model"], ("m",), {"name": "m"}])
def test_a_non_string_is_refused(name: object) -> None:
    with pytest.raises(InvalidInputError) as refused:
        check_model_name(name)
    assert str(refused.value) == f"invalid model name {name!r}: use {RULE}"


def test_a_long_name_is_shown_cut_in_the_message() -> None:
    with pytest.raises(InvalidInputError) as refused:
        check_model_name("a" * 81)
    assert str(refused.value) == f"invalid model name {'a' * 77 + '...'!r}: use {RULE}"
    with pytest.raises(InvalidInputError) as refused:
        check_model_name("a" * 80)
    assert str(refused.value) == f"invalid model name {'a' * 80!r}: use {RULE}"


@pytest.mark.parametrize(
    ("text", "suggested"),
    [
        ("My Model", "my-model"),
        ("model_1", "model-1"),
        ("m.v2", "m-v2"),
        ("x.y.z", "x-y-z"),
        ("9lives", "m-9lives"),
        ("1", "m-1"),
        ("", "m"),
        ("-", "m"),
        ("___", "m"),
        ("--a--b--", "a-b"),
        ("ab--cd", "ab-cd"),
        ("A" * 50, "a" * 40),
        ("a-" + "b" * 38 + "-c", "a-" + "b" * 38),  # cut at 40, then the trailing '-' dropped
        ("hybridml-model", "hybridml-model"),
    ],
)
def test_suggested_names(text: str, suggested: str) -> None:
    assert suggest_model_name(text) == suggested


@pytest.mark.parametrize(
    "text", ["My Model", "9 Lives!", "_", "a" * 100, "-" * 50, "x_" * 30, "\u00dcbung 2", "0" * 45, "A.B-C_D e"]
)
def test_every_suggestion_passes_the_rule(text: str) -> None:
    suggested = suggest_model_name(text)
    assert check_model_name(suggested) == suggested
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", suggested)
    assert len(suggested) <= MAX_NAME_LENGTH


def test_a_valid_name_is_its_own_suggestion() -> None:
    for name in ("a", "hybridml-model", "m1", "a" * 40):
        assert suggest_model_name(name) == name
