"""text.printable: terminal escapes and control characters are shown, not obeyed."""

from __future__ import annotations

from mlops_cli.text import printable


def test_plain_text_is_unchanged() -> None:
    for text in ("rollback after p99 regression", "Müller 東京 🚀", ""):
        assert printable(text) == text


def test_escape_sequences_are_shown() -> None:
    reason = "ok\x1b[2J\x1b]0;pwned\x07\rfake line\x08"
    assert printable(reason) == "ok\\x1b[2J\\x1b]0;pwned\\x07\\rfake line\\x08"
    assert "\x1b" not in printable(reason)


def test_newlines_tabs_and_backslashes() -> None:
    assert printable("a\nb\tc\\x1b") == "a\\nb\\tc\\\\x1b"
    assert printable("a\nb", keep_newlines=True) == "a\nb"


def test_invisible_and_bidi_characters() -> None:
    assert printable("admin\u202e\u200b\x9b\x7f") == "admin\\u202e\\u200b\\x9b\\x7f"
    assert printable("x\u2028y\U000e0041") == "x\\u2028y\\U000e0041"
