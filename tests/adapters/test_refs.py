from __future__ import annotations

import pytest

from adapters import AdapterNotFound, RegistryError, format_ref, parse_ref, validate_name


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("a@2", ("a", 2)), ("a", ("a", None)), ("support-bot.v2_x@13", ("support-bot.v2_x", 13))],
)
def test_parse_ref(ref: str, expected: tuple) -> None:
    assert parse_ref(ref) == expected
    if expected[1] is not None:
        assert format_ref(*expected) == ref


@pytest.mark.parametrize(
    ("ref", "reason"),
    [("", "expected NAME"), ("a@", "positive integer"), ("a@0", "positive integer"),
     ("a@x", "positive integer"), ("a@1@2", "positive integer"), ("a/b", "not a valid"),
     ("-a", "not a valid"), ("a" * 65, "not a valid"), ("a@\u0661", "positive integer")],
)
def test_bad_refs_say_why(ref: str, reason: str) -> None:
    with pytest.raises(AdapterNotFound, match=reason):
        parse_ref(ref)


@pytest.mark.parametrize("name", ["a@1", "a/b", "", ".hidden", "x" * 65, "spa ce"])
def test_bad_names(name: str) -> None:
    with pytest.raises(RegistryError, match="invalid adapter name"):
        validate_name(name)
    assert issubclass(AdapterNotFound, RegistryError)


def test_good_name() -> None:
    assert validate_name("Support_bot-2.1") == "Support_bot-2.1"
