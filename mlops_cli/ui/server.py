"""`mlops ui`: the dashboard, a WSGI application served by waitress.

JSON under /api/ (answered by `data`), the single-page app for every page path, the static
files under /static/. Every response carries a Content-Security-Policy that allows only this
server. Read-only unless `allow_actions`; then a POST must carry the per-session token that the
page embeds. With an access `token` (required off loopback) every request must present it.

The front end is waitress (one thread reads every connection; a request reaches the
application only once it is whole), configured by `Limits`: a listen backlog, a deadline for a
request's header and one for its body, an idle timeout, and a cap on connections that closes
the oldest idle one to make room. A client that opens connections and sends half a request
(or nothing) therefore holds no thread and cannot keep a normal request waiting.
"""

from __future__ import annotations

import getpass
import hmac
import html
import ipaddress
import os
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, unquote_plus, urlsplit, urlunsplit

import orjson

from ..errors import MlopsError, NotFoundError, ServiceError, ValidationError
from . import data
from .transport import Limits, Served

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",
}
PAGES = ("", "model", "test", "drift", "events")
MAX_BODY = 64 * 1024


def static_dir() -> Path:
    return Path(str(resources.files("mlops_cli.ui") / "static"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without an access token (anyone on the network could
    read the registry, or change it with --allow-actions)."""
    if token is not None and (not token or any(c.isspace() or not c.isprintable() for c in token)):
        raise ValidationError(
            "--token must be non-empty, without spaces or control characters "
            "(it travels in URLs and headers)"
        )
    if not is_loopback(host) and not token:
        raise ValidationError(
            f"refusing to serve on {host} without --token: only loopback addresses "
            "(127.0.0.1, ::1, localhost) may be served without one"
        )


@dataclass
class Settings:
    project: str | None
    allow_actions: bool = False
    token: str | None = None  # access token for every request (required off loopback)
    loopback_only: bool = True  # served on a loopback address: check the Host header
    session: str = field(default_factory=lambda: secrets.token_urlsafe(24))  # POST token
    action_lock: threading.Lock = field(default_factory=threading.Lock)


ACCESS_TOKEN_PARAM = "token"


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of what a client sent with a secret; any text compares (a
    header or parameter may hold characters no token has: they simply do not match)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def redacted(target: str) -> str:
    """A request target as the access log shows it: the access token's value hidden."""
    url = urlsplit(target)
    if not url.query:
        return target
    pairs = [
        f"{key}=[redacted]" if unquote_plus(key) == ACCESS_TOKEN_PARAM else pair
        for pair in url.query.split("&")
        for key in [pair.split("=", 1)[0]]
    ]
    return urlunsplit((url.scheme, url.netloc, url.path, "&".join(pairs), url.fragment))


class BadRequest(Exception):
    """A query parameter out of its bounds: 400."""


def whole_number(
    query: dict[str, list[str]],
    name: str,
    default: int | None,
    low: int,
    high: int | None = None,
) -> int | None:
    """A whole-number query parameter in [low, high] (BadRequest otherwise)."""
    given = query.get(name, [""])[0]
    if not given:
        return default
    if (
        not given.isascii()
        or not given.isdigit()
        or len(given) > 18  # a position fits in 63 bits
        or int(given) < low
        or (high is not None and int(given) > high)
    ):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be a whole number {bounds}, not {given!r}")
    return int(given)


class Request:
    """One request to the dashboard: what the WSGI environment says, and its answer."""

    def __init__(self, settings: Settings, environ: dict[str, Any]) -> None:
        self.settings = settings
        self.environ = environ
        self.command = str(environ.get("REQUEST_METHOD", "GET"))
        # The target as sent (percent-escapes kept): a segment may hold an escaped '/'.
        target = str(environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/")
        self.path = target
        self.status = 500
        self.response_headers: list[tuple[str, str]] = []
        self.body = b""

    def header(self, name: str) -> str:
        key = "HTTP_" + name.upper().replace("-", "_")
        if name.lower() == "content-length":
            key = "CONTENT_LENGTH"
        # WSGI hands header bytes over as Latin-1 text: back to the UTF-8 the client meant.
        raw = str(self.environ.get(key, ""))
        return raw.encode("latin-1", "replace").decode("utf-8", "surrogateescape")

    # -- answering ---------------------------------------------------------------------------

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.response_headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            *SECURITY_HEADERS,
            *(headers or {}).items(),
        ]
        self.body = b"" if self.command == "HEAD" else body

    def send_json(self, status: int, doc: Any) -> None:
        self.send(status, orjson.dumps(doc), "application/json")

    def send_error_doc(self, status: int, kind: str, message: str) -> None:
        if self.path.startswith("/api/"):
            self.send_json(status, {"error": {"type": kind, "message": message}})
        else:
            self.send(status, error_page(status, message), "text/html; charset=utf-8")

    def log_error(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"mlops ui: {format % args}\n")

    # -- access ------------------------------------------------------------------------------

    def host_allowed(self) -> bool:
        """On loopback, only a loopback name in the Host header: a page on another site whose
        name was rebound to 127.0.0.1 (DNS rebinding) must not read or change the registry."""
        if not self.settings.loopback_only:
            return True
        host = self.header("Host")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.strip("[]") in ("localhost", "127.0.0.1", "::1") or is_loopback(
            name.strip("[]")
        )

    def refused(self, authorized: bool) -> bool:
        """Answer 403 for a foreign Host header, 401 without the access token."""
        if not self.host_allowed():
            host = self.header("Host")
            self.send_error_doc(403, "Forbidden", f"this dashboard is not served as {host!r}")
            return True
        if not authorized:
            self.send_error_doc(401, "Unauthorized", "this dashboard needs its access token")
            return True
        return False

    def authorized(self, query: dict[str, list[str]]) -> tuple[bool, dict[str, str]]:
        """Whether the request presents the access token (when one is set); a `?token=`
        in a page address is turned into a cookie so the page's own requests carry it."""
        token = self.settings.token
        if not token:
            return True, {}
        given = query.get(ACCESS_TOKEN_PARAM, [""])[0]
        if given and same_secret(given, token):
            value = quote(token, safe="")
            return True, {"Set-Cookie": f"mlops_token={value}; HttpOnly; SameSite=Strict; Path=/"}
        header = self.header("Authorization")
        if header.startswith("Bearer ") and same_secret(header[7:], token):
            return True, {}
        try:
            cookies = SimpleCookie(self.header("Cookie"))
        except CookieError:
            return False, {}
        if "mlops_token" in cookies and same_secret(unquote(cookies["mlops_token"].value), token):
            return True, {}
        return False, {}

    # -- GET ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        ok, extra = self.authorized(query)
        if self.refused(ok):
            return
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            if any("\x00" in p for p in parts):
                raise NotFoundError(f"no page at {url.path}")
            if len(parts) == 4 and parts[:2] == ["api", "controller"] and parts[3] == "gate":
                self.gate(parts[2])
            elif parts[:1] == ["api"]:
                self.send_json(200, self.api(parts[1:], query))
            elif parts[:1] == ["static"]:
                self.static(parts[1:])
            elif (parts[:1] or [""])[0] in PAGES and len(parts) <= 3:
                self.page(parts, extra)
            else:
                raise NotFoundError(f"no page at {url.path}")
        except BadRequest as exc:
            self.send_error_doc(400, "ValidationError", str(exc))
        except NotFoundError as exc:
            self.send_error_doc(404, exc.type, str(exc))
        except ValidationError as exc:
            # A malformed name in the address names nothing that exists.
            self.send_error_doc(404, exc.type, str(exc))
        except MlopsError as exc:
            self.send_error_doc(409 if exc.type == "ConflictError" else 500, exc.type, str(exc))
        except Exception as exc:  # a bug: say so without a traceback in the page
            self.log_error("unexpected %s: %s", type(exc).__name__, exc)
            self.send_error_doc(500, "InternalError", f"unexpected {type(exc).__name__}")

    def api(self, parts: list[str], query: dict[str, list[str]]) -> Any:
        where = self.settings.project
        match parts:
            case ["overview"]:
                return data.overview(where)
            case ["model", model_type]:
                return data.model(where, model_type)
            case ["test", name]:
                return data.ab_test(where, name)
            case ["controller", name]:
                return data.controller(where, name)
            case ["drift", model_type, version]:
                return data.drift(where, model_type, version)
            case ["events"]:
                before = whole_number(query, "before", None, 0)
                limit = whole_number(query, "limit", data.EVENTS_PAGE, 1, data.MAX_EVENTS_PAGE)
                try:
                    return data.events(
                        where,
                        query.get("model_type", [""])[0],
                        query.get("kind", [""])[0],
                        before,
                        int(limit or data.EVENTS_PAGE),
                    )
                except ValidationError as exc:  # a cursor that is no position in the log
                    raise BadRequest(str(exc)) from None
            case ["session"]:
                return {
                    "allow_actions": self.settings.allow_actions,
                    "actions": list(data.ACTIONS) if self.settings.allow_actions else [],
                }
        raise NotFoundError(f"no API endpoint /api/{'/'.join(parts)}")

    def gate(self, name: str) -> None:
        """A delivery controller's gate: 200 with the verdict while the rollout may go on,
        409 (non-2xx: Flagger halts, Argo's web metric fails) when it may not."""
        verdict = data.controller(self.settings.project, name)
        self.send_json(200 if verdict["safe_to_continue"] else 409, verdict)

    def page(self, parts: list[str], extra: dict[str, str]) -> None:
        """The app's page; an address naming an unknown model type or test answers 404."""
        where = self.settings.project
        match parts:
            case ["model" | "test", _] | ["drift", _, _]:
                data.require(where, parts[0], *parts[1:])
            case [] | ["events"]:
                pass
            case _:
                raise NotFoundError(f"no page at /{'/'.join(parts)}")
        body = (static_dir() / "index.html").read_text()
        token = self.settings.session if self.settings.allow_actions else ""
        body = body.replace("{{session}}", html.escape(token, quote=True))
        self.send(200, body.encode(), STATIC_TYPES[".html"], extra)

    def static(self, parts: list[str]) -> None:
        root = static_dir().resolve()
        path = root.joinpath(*parts).resolve() if parts else root
        if root not in path.parents or not path.is_file() or any(p.startswith(".") for p in parts):
            raise NotFoundError(f"no file /static/{'/'.join(parts)}")
        content_type = STATIC_TYPES.get(path.suffix, "application/octet-stream")
        self.send(200, path.read_bytes(), content_type)

    # -- POST --------------------------------------------------------------------------------

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        ok, _ = self.authorized(parse_qs(url.query))
        if self.refused(ok):
            return
        parts = [unquote(p) for p in url.path.split("/") if p]
        if len(parts) == 4 and parts[:2] == ["api", "controller"] and parts[3] == "gate":
            self.controller_post(parts[2])  # read only: no session token, no --allow-actions
            return
        if parts[:2] == ["api", "controller"]:  # not an action: no --allow-actions helps
            self.send_error_doc(
                405, "MethodNotAllowed",
                "a POST is answered only at /api/controller/<test>/gate (a Flagger webhook); "
                "GET /api/controller/<test> reads the verdict",
            )
            return
        if not self.settings.allow_actions:
            self.send_error_doc(
                403, "Forbidden", "this dashboard is read-only; start it with --allow-actions"
            )
            return
        given = self.header("X-Mlops-Session")
        if not same_secret(given, self.settings.session):
            self.send_error_doc(403, "Forbidden", "missing or wrong session token")
            return
        parts = [unquote(p) for p in url.path.split("/") if p]
        if len(parts) != 3 or parts[:2] != ["api", "action"]:
            self.send_error_doc(404, "NotFoundError", f"no action at {url.path}")
            return
        try:
            length = int(self.header("Content-Length") or "0")  # checked by waitress
            if not 0 < length <= MAX_BODY:
                raise ValidationError("an action needs a JSON body of at most 64 KiB")
            args = orjson.loads(self.environ["wsgi.input"].read(length))
            if not isinstance(args, dict):
                raise ValidationError("an action's body must be a JSON object")
            with self.settings.action_lock:
                result = data.act(self.settings.project, parts[2], args)
            self.send_json(200, result)
        except orjson.JSONDecodeError as exc:
            self.send_json(400, {"error": {"type": "ValidationError", "message": str(exc)}})
        except MlopsError as exc:
            status = {"NotFoundError": 404, "ValidationError": 400, "ConflictError": 409}
            self.send_json(
                status.get(exc.type, 500),
                # the refusal as `mlops` words it: the page's actions are the CLI's
                {"error": {"type": exc.type, "message": exc.for_cli()}},
            )
        except Exception as exc:
            self.log_error("unexpected %s: %s", type(exc).__name__, exc)
            self.send_json(500, {"error": {"type": "InternalError", "message": type(exc).__name__}})

    def controller_post(self, name: str) -> None:
        """Flagger's webhook POST (its payload names the canary; it is read and checked as a
        JSON object, then the gate answers as on GET)."""
        try:
            length = int(self.header("Content-Length") or "0")
            if not 0 <= length <= MAX_BODY:
                raise ValidationError("a webhook body is at most 64 KiB")
            if length:
                body = orjson.loads(self.environ["wsgi.input"].read(length))
                if not isinstance(body, dict):
                    raise ValidationError("a webhook's body must be a JSON object")
            self.gate(name)
        except orjson.JSONDecodeError as exc:
            self.send_error_doc(
                400, "ValidationError", f"a webhook's body must be a JSON object, not: {exc}"
            )
        except ValidationError as exc:
            self.send_error_doc(400, exc.type, str(exc))
        except NotFoundError as exc:
            self.send_error_doc(404, exc.type, str(exc))
        except MlopsError as exc:
            self.send_error_doc(500, exc.type, str(exc))

    def answer(self) -> None:
        if self.command in ("GET", "HEAD"):
            self.do_GET()
        elif self.command == "POST":
            self.do_POST()
        else:
            self.send_error_doc(405, "MethodNotAllowed", f"{self.command} is not answered here")


SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class Dashboard:
    """The WSGI application: one `Request` per call, answered whole (no streaming)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.access_log = bool(os.environ.get("MLOPS_UI_LOG"))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        request = Request(self.settings, environ)
        try:
            request.answer()
        except Exception as exc:  # a bug: say so without a traceback in the page
            request.log_error("unexpected %s: %s", type(exc).__name__, exc)
            request.send_error_doc(500, "InternalError", f"unexpected {type(exc).__name__}")
        if self.access_log:
            client = environ.get("REMOTE_ADDR", "-")
            sys.stderr.write(
                f'{client} "{request.command} {redacted(request.path)}" {request.status}\n'
            )
        phrase = HTTPStatus(request.status).phrase
        start_response(f"{request.status} {phrase}", request.response_headers)
        return [request.body]


def error_page(status: int, message: str) -> bytes:
    title = f"{status} {HTTPStatus(status).phrase}"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{title} - mlops</title><link rel=stylesheet href=/static/style.css></head>"
        f"<body><main><h1>{title}</h1><p class=error-message>{html.escape(message)}</p>"
        "<p><a href=/>Back to the overview</a></p></main></body></html>"
    ).encode()


def make_server(
    project: str | None,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_actions: bool = False,
    token: str | None = None,
    limits: Limits | None = None,
) -> Served:
    """A server bound to (host, port) (port 0: a free one), not yet serving."""
    check_bind(host, token)
    data.project_root(project)  # fail now, not on the first page, when there is no project
    if allow_actions and not os.environ.get("MLOPS_ACTOR", "").startswith("ui:"):
        # Audit events name the dashboard as the actor (the server is its own process).
        try:
            user = os.environ.get("MLOPS_ACTOR") or getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        os.environ["MLOPS_ACTOR"] = f"ui:{user}"
    settings = Settings(
        project=project,
        allow_actions=allow_actions,
        token=token,
        loopback_only=is_loopback(host),
    )
    try:
        return Served(Dashboard(settings), host, port, limits or Limits(), list(SECURITY_HEADERS))
    except OSError as exc:
        raise ServiceError(
            f"cannot serve on {host}:{port}: {exc.strerror or exc} (choose another --port)"
        ) from exc


def url_of(server: Served, token: str | None = None) -> str:
    """The dashboard's address, with the access token percent-encoded (a base64 token's
    `+`, `/` and `=` would otherwise reach the server changed)."""
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={quote(token, safe='')}" if token else "")
