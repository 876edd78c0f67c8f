"""`mlops report --html`: the dashboard's views as one self-contained HTML file.

The page is the dashboard's own app with its script, styles and data inlined: it makes no
request at all (its Content-Security-Policy forbids any), so it can be attached to a CI run
and opened from disk. The data is what the dashboard's JSON endpoints would answer, keyed by
their paths (built by `mlops_cli.ui.data.bundle`).
"""

from __future__ import annotations

import base64
import hashlib
import html
from importlib import resources
from pathlib import Path
from typing import Any

import orjson


def _csp(scripts: list[str], styles: list[str]) -> str:
    """Only these inline scripts and styles (by hash) may run; nothing may be fetched."""

    def hashes(blocks: list[str]) -> str:
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in blocks
        )

    return (
        f"default-src 'none'; script-src {hashes(scripts)}; style-src {hashes(styles)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )


def _asset(name: str) -> str:
    return (resources.files("mlops_cli.ui") / "static" / name).read_text(encoding="utf-8")


def _inline_json(doc: Any) -> str:
    """JSON safe inside a <script> element: no `</`, no `<!--`, no U+2028/9 line breaks."""
    text = orjson.dumps(doc).decode()
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _inline_script(code: str) -> str:
    return code.replace("</script", "<\\/script")


def render_html(docs: dict[str, Any], title: str = "mlops report") -> str:
    """The report page for `docs` (API path -> JSON document)."""
    generated = docs.get("/overview", {}).get("generated_at", "")
    styles = [f"{_asset('vendor/uPlot.min.css')}\n{_asset('style.css')}"]
    scripts = [
        _inline_script(_asset("vendor/uPlot.iife.min.js")),
        _inline_script(_asset("app.js")),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_csp(scripts, styles)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title>"
        f"<style>{styles[0]}</style>"
        "</head><body>"
        '<header class="top"><a class="brand" href="#/">mlops</a>'
        '<nav aria-label="Sections"><a href="#/">Overview</a> '
        '<a href="#/events">Audit log</a></nav>'
        f'<span class="report-note">report generated {html.escape(generated)}</span></header>'
        '<main id="app" tabindex="-1"><p>Loading…</p></main>'
        f'<script type="application/json" id="mlops-data">{_inline_json(docs)}</script>'
        + "".join(f"<script>{code}</script>" for code in scripts)
        + "</body></html>\n"
    )


def write_report(path: Path, page: str) -> int:
    """Write the page atomically (a temp file beside it, then rename); returns its size."""
    import os
    import tempfile

    body = page.encode("utf-8")
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(body)
