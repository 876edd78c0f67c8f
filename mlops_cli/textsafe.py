"""Text from users and files, made safe to print on a terminal."""

from __future__ import annotations

from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with control and format characters shown as escapes (ESC as \\x1b).

    Terminal escape sequences, carriage returns, backspaces, bidirectional overrides and
    other invisible characters in a reason, description or actor can no longer rewrite what
    a human sees. A backslash is doubled so an escape shown cannot be confused with one
    typed. Printable Unicode (accents, CJK, emoji) is kept as it is. With `keep_newlines`,
    "\\n" stays a line break (for multi-line descriptions in a panel).
    """
    if text.isprintable() and "\\" not in text:
        return text
    import unicodedata  # (only for the rare text that needs escapes)

    out: list[str] = []
    for ch in text:
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            code = ord(ch)
            if code <= 0xFF:
                out.append(f"\\x{code:02x}")
            elif code <= 0xFFFF:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def audit_value(value: Any) -> dict[str, Any]:
    """How a changed setting's value goes into the audit log: numbers and flags as they are;
    text and groups (a hook command often holds a token) only as a fingerprint, so the log
    shows that and when the value changed, and whether two changes set the same value."""
    if value is None or isinstance(value, (bool, int, float)):
        return {"value": value}
    import hashlib  # here: importing it costs every command's start-up 3 ms
    import json

    canonical = json.dumps(value, sort_keys=True, default=str).encode()
    return {"value_sha256": hashlib.sha256(canonical).hexdigest()[:16]}
