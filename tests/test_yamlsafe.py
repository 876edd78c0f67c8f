"""yamlsafe: alias bombs, duplicate keys and deep nesting are clean errors, fast."""

from __future__ import annotations

import time

import pytest

from mlops_cli import yamlsafe
from mlops_cli.errors import StateError, ValidationError


def bomb(levels: int = 9, fan: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join(f"*a{i - 1}" for _ in range(fan))
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"top: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_plain_documents_load() -> None:
    text = "schema_version: 1\nsettings:\n  drift: {weights: [0.4, 0.3, 0.3]}\nok: true\n"
    assert yamlsafe.load_yaml(text.encode(), "f.yaml") == {
        "schema_version": 1,
        "settings": {"drift": {"weights": [0.4, 0.3, 0.3]}},
        "ok": True,
    }


def test_small_aliases_are_fine() -> None:
    text = "base: &b {alpha: 0.05}\none: *b\ntwo: *b\nmerged:\n  <<: *b\n  alpha: 0.01\n"
    doc = yamlsafe.load_yaml(text, "f.yaml")
    assert doc["two"] == {"alpha": 0.05} and doc["merged"] == {"alpha": 0.01}


@pytest.mark.parametrize("levels", [9, 10, 30])
def test_billion_laughs_fails_in_milliseconds(levels: int) -> None:
    text = bomb(levels)
    assert len(text) < 3_000  # as small as the 2.7 KB file (10^9 nodes at 9 levels)
    started = time.perf_counter()
    with pytest.raises(ValidationError, match=r"^cfg.yaml: aliases expand past 10,000 nodes"):
        yamlsafe.load_yaml(text, "cfg.yaml")
    assert time.perf_counter() - started < 0.1


def test_duplicate_keys_name_key_and_line() -> None:
    text = "models:\n  g:\n    champion: 1.0.0\n    champion: 2.0.0\n"
    with pytest.raises(
        StateError,
        match=r"^registry.yaml: duplicate key 'champion' at line 4 \(first at line 3\)",
    ):
        yamlsafe.load_yaml(text, "registry.yaml", error=StateError)


def test_duplicate_keys_in_flow_mapping() -> None:
    with pytest.raises(ValidationError, match="duplicate key 'a' at line 1"):
        yamlsafe.load_yaml("{a: 1, b: 2, a: 3}", "cfg.yaml")


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_nesting_is_a_clean_error(depth: int) -> None:
    """Past 1,000 levels libyaml itself stops ("exceeded maximum nesting depth")."""
    started = time.perf_counter()
    with pytest.raises(ValidationError, match=r"^cfg.yaml: .*nesting"):
        yamlsafe.load_yaml("[" * depth + "]" * depth, "cfg.yaml")
    block = "".join("  " * i + f"k{i}:\n" for i in range(depth if depth < 1000 else 1000))
    with pytest.raises(ValidationError, match="nesting deeper than 64 levels"):
        yamlsafe.load_yaml(block + "  " * 1000 + "v: 1\n", "cfg.yaml")
    assert time.perf_counter() - started < 2


def test_depth_64_is_accepted() -> None:
    doc = yamlsafe.load_yaml("[" * 64 + "]" * 64, "cfg.yaml")
    for _ in range(63):
        doc = doc[0]
    assert doc == []


def test_syntax_error_keeps_message_shape() -> None:
    with pytest.raises(
        StateError,
        match=r"^registry.yaml: YAML error at line 2, column 2: did not find .*; fix the file or restore",
    ):
        yamlsafe.load_yaml(
            "a: [1\nb: 2\n",
            "registry.yaml",
            error=StateError,
            hint="; fix the file or restore it from backup",
        )


def test_unsafe_tags_are_refused() -> None:
    with pytest.raises(ValidationError, match="YAML error"):
        yamlsafe.load_yaml("!!python/object/apply:os.system ['true']", "cfg.yaml")


@pytest.mark.parametrize(
    ("text", "line"),
    [("lr: 2026-13-01\n", 1), ("a: 1\nb: 2026-02-30\n", 2), ("t: 2026-01-01 25:00:00\n", 1)],
)
def test_a_date_shaped_value_that_is_no_date_is_a_clean_error(text: str, line: int) -> None:
    with pytest.raises(ValidationError, match=f"f.yaml: .* at line {line} is not a valid date"):
        yamlsafe.load_yaml(text, "f.yaml")
    with pytest.raises(StateError, match="quote it to keep it as text"):
        yamlsafe.load_yaml(text, "registry.yaml", StateError)


def test_valid_and_quoted_dates_load() -> None:
    import datetime

    doc = yamlsafe.load_yaml("d: 2026-02-28\nq: '2026-13-01'\n", "f.yaml")
    assert doc == {"d": datetime.date(2026, 2, 28), "q": "2026-13-01"}
