"""Events out: registry events delivered to HTTP endpoints, signed, at least once, in order.

A change's audit events are also written, in the change's own transaction, to an outbox
(store/base.py `outbox_entries`: an id, a number across the outbox, a sequence number per
model type), once the project has an endpoint. Delivery works from the outbox in lanes, one
per endpoint and model type: a lane's events go out in sequence order, one at a time, and an
event goes to an endpoint only after the earlier ones of its type there were delivered or
dead-lettered. A deliverer claims due lanes under the store's delivery lock (`claim`), posts
their events with no lock held, then settles the outcome under the lock again; a claim has a
lease, so a deliverer that died leaves its lanes to others after it. A post that fails is
retried after `backoff_s * 2**(attempt - 1)` seconds (by the store's clock), and after
`max_attempts` failures the event is dead-lettered (logged, shown by `mlops webhook
deliveries`) and the lane moves on. Receivers may see an event more than once (a deliverer
may die after the post and before its settle): they deduplicate by the event id.

Each post is JSON with headers X-Mlops-Event-Id, X-Mlops-Timestamp (Unix seconds) and
X-Mlops-Signature: `sha256=` + hex HMAC-SHA256(secret, f"{timestamp}.{body}") (docs/events.md
has a receiver's check). Only the standard library's urllib speaks HTTP, with a timeout on
every request and redirects not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import MlopsError, NotFoundError, ValidationError
from .results import MappingResult
from .store.base import DeliveryState, Store
from .textsafe import printable
from .timeutil import stamp

# The event kinds a filter (`--events`) may name; `*` takes every kind, also kinds added
# later. An event of any kind is written to the outbox: this list only checks filters.
KNOWN_EVENTS = (
    "registered",
    "promoted",
    "rolled_back",
    "deprecated",
    "alias_set",
    "alias_deleted",
    "ab_started",
    "ab_finalized",
    "ab_aborted",
    "ab_tail_threshold",
    "test_ramped",
    "watch_breached",
    "watch_rolled_back",
    "drift_level_entered",
    "drift_source",
    "monitored",
    "unmonitored",
    "setting_changed",
)
RUN = 20  # events a claim takes from one lane at most
LEASE_MARGIN_S = 30.0  # a claim's lease beyond its run's request timeouts
URL_MAX = 2048
_URL = re.compile(r"https?://[^\s/?#@]+(?::[0-9]{1,5})?(?:[/?#][^\s]*)?", re.ASCII)

Post = Callable[[str, bytes, dict[str, str], float], int]


@dataclass
class Webhook(MappingResult):
    """An endpoint events are delivered to (its secret is not part of it)."""

    id: str
    url: str
    events: list[str]
    model_type: str | None
    created_at: str
    secret: str | None = None  # only when just added: shown once, then never again

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.secret is None:
            del doc["secret"]
        return doc

    def wants(self, entry: dict[str, Any]) -> bool:
        """Whether an outbox entry goes to this endpoint (its kinds and model type)."""
        if self.model_type is not None and entry.get("model_type") != self.model_type:
            return False
        return "*" in self.events or entry.get("event") in self.events


@dataclass
class Delivery(MappingResult):
    """Where one event stands at one endpoint: delivered, failed (to be retried), dead."""

    webhook: str
    id: str
    model_type: str | None
    seq: int
    event: str
    status: str
    attempt: int
    ts: str
    http_status: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeliveryReport(MappingResult):
    """What a round of delivery did."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    pending: int = 0  # events of the lanes it saw still to go (retries not yet due, or later)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_events(value: str | list[str]) -> list[str]:
    """An `--events` filter: `*`, or known event kinds separated by commas."""
    kinds = [k.strip() for k in value.split(",")] if isinstance(value, str) else list(value)
    if not kinds or any(not k for k in kinds):
        raise ValidationError(
            "name the event kinds to deliver, separated by commas, or * for all",
            field="events",
        )
    unknown = [k for k in kinds if k != "*" and k not in KNOWN_EVENTS]
    if unknown:
        raise ValidationError(
            f"unknown event kind {printable(unknown[0])!r} (known: {', '.join(KNOWN_EVENTS)}; "
            "or * for every kind)",
            field="events",
        )
    if "*" in kinds:
        return ["*"]
    return sorted(set(kinds), key=kinds.index)


LANES_AT_ONCE = 16  # lanes posting at the same time in one deliverer


def validate_url(url: str) -> str:
    """An endpoint URL: http or https, a host, no credentials, no spaces, at most 2048
    characters (a secret in a URL would be printed by `webhook list`)."""
    if not isinstance(url, str) or len(url) > URL_MAX or _URL.fullmatch(url) is None:
        shown = re.sub(r"(://)[^/?#@]*@", r"\1***@", printable(str(url)))  # never a password
        raise ValidationError(
            f"invalid webhook URL {shown[:200]!r}: give an http:// or https:// "
            "URL with a host, no user or password, no spaces",
            field="url",
        )
    return url


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Mlops-Signature header: sha256= and hex HMAC-SHA256 of "{timestamp}.{body}"."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff_s(attempt: int, base_s: float) -> float:
    """The delay before retry after the `attempt`-th failure (1, 2, ...): base, doubling."""
    return float(base_s * 2 ** (attempt - 1))


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST `body` to `url` (urllib, this timeout, no redirects followed): the status code.
    Raises OSError (urllib's URLError and HTTPError are ones) for no answer or a 3xx-5xx."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # a 3xx is an answer that is not 2xx: a failure

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with opener.open(request, timeout=timeout) as response:
        response.read(65536)
        return int(response.status)


class WebhookManager:
    """Endpoints, and delivery of the outbox to them."""

    def __init__(self, store: Store, post: Post = http_post) -> None:
        self.store = store
        self.post = post

    # -- endpoints --------------------------------------------------------------------------

    def add(
        self, url: str, events: str | list[str], model_type: str | None = None
    ) -> Webhook:
        """Add an endpoint: events committed from now on (of its kinds, of its model type
        when given) are delivered to it. The result carries its signing secret, which is
        shown this once."""
        validate_url(url)
        kinds = parse_events(events)
        secret = secrets.token_hex(32)
        hook_id = "wh-" + uuid.uuid4().hex[:12]
        with self.store.transaction() as txn:
            if model_type is not None:
                txn.state.model(model_type)  # NotFoundError when unknown
            created = stamp(txn.clock())
            txn.state.webhooks[hook_id] = {
                "url": url,
                "events": kinds,
                "model_type": model_type,
                "created_at": created,
                "after": txn.state.outbox_n,
            }
            txn.secrets[hook_id] = secret
            txn.event("webhook_added", webhook=hook_id, url=url, events=kinds,
                      model_type=model_type)
        return Webhook(hook_id, url, kinds, model_type, created, secret)

    def remove(self, hook_id: str) -> Webhook:
        """Remove an endpoint (its undelivered events are not sent to it)."""
        with self.store.transaction() as txn:
            doc = txn.state.webhooks.pop(hook_id, None)
            if doc is None:
                raise NotFoundError(self._unknown(hook_id, txn.state.webhooks))
            txn.secrets[hook_id] = None
            txn.event("webhook_removed", webhook=hook_id, url=doc["url"])
        return _webhook(hook_id, doc)

    def endpoints(self) -> list[Webhook]:
        return [_webhook(i, d) for i, d in sorted(self.store.read().webhooks.items())]

    @staticmethod
    def _unknown(hook_id: str, known: dict[str, Any]) -> str:
        names = ", ".join(sorted(known)) or "none"
        return f"unknown webhook {printable(hook_id)!r} (webhooks: {names})"

    # -- delivery ---------------------------------------------------------------------------

    def deliver(self, for_s: float = 60.0) -> DeliveryReport:
        """Deliver what is due now: rounds of claim, post, settle until no lane has an event
        due (a retry waits for its time: the next call takes it), or until `for_s` seconds
        (wall clock) have passed; at least one event per due lane is tried. Failures are
        recorded and retried later, never raised."""
        report = self._rounds(for_s)
        report.pending = self._pending()
        return report

    def drain_after_change(self) -> None:
        """Deliver for at most `webhooks.drain_s` seconds after a change committed events
        (0: not at all). Never raises: the change is done whatever delivery does."""
        try:
            settings = self.store.read().settings.data.get("webhooks") or {}
            drain_s = float(settings.get("drain_s", 2.0))
            if drain_s <= 0:
                return
            report = self._rounds(drain_s, try_each=False)
        except (MlopsError, OSError) as exc:
            sys.stderr.write(
                f"warning: events not delivered now ({printable(str(exc))}); "
                "`mlops webhook deliver` continues\n"
            )
            return
        said = [
            f"{n} event {'delivery' if n == 1 else 'deliveries'} {what}"
            for n, what in ((report.failed, "failed (retried later)"),
                            (report.dead, "dead-lettered (not retried)"))
            if n
        ]
        if said:
            sys.stderr.write(f"note: {'; '.join(said)}: `mlops webhook deliveries` shows them\n")

    def _rounds(self, for_s: float, try_each: bool = True) -> DeliveryReport:
        """Claim, post, settle until nothing is due or the time is up. Each request's
        timeout is cut to the time left, but in the first round when `try_each` (so every
        call tries each lane that was due). A post cut short by the time left is not a
        failed attempt: its lane stays due for the next deliverer."""
        deadline = time.monotonic() + max(for_s, 0.0)
        settings = self.store.read().settings.data.get("webhooks") or {}
        timeout_s = float(settings.get("timeout_s", 5.0))
        report = DeliveryReport()
        first = try_each
        while True:
            claims = self._claim(timeout_s)
            if not claims:
                break
            left = deadline - time.monotonic()
            if not first and left <= 0:
                for claim in claims:
                    self._release(claim)
                break
            budget = timeout_s if first else min(timeout_s, max(left, 0.05))
            cut = None if first else deadline

            def post(claim: _Claim, budget: float = budget, cut: float | None = cut) -> Any:
                return self._post_run(claim, budget, cut, budget < timeout_s)

            # Lanes post side by side (a slow endpoint holds up only its own lane), each
            # settled here, one after another, under the delivery lock.
            if len(claims) == 1:
                runs = [post(claims[0])]
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(min(len(claims), LANES_AT_ONCE)) as pool:
                    runs = list(pool.map(post, claims))
            for claim, outcomes in zip(claims, runs, strict=True):
                self._settle(claim, outcomes, report)
            first = False
            if time.monotonic() >= deadline:
                break
        return report

    def deliveries(self, limit: int = 100, status: str | None = None) -> list[Delivery]:
        """The newest outcome per event and endpoint among the last `limit` attempts (dead
        letters included), oldest first; with `status`, only those (delivered, failed,
        dead). Only endpoints there are now: a removed one's events are no longer retried,
        and its removal is in the audit log (`webhook_removed`)."""
        if limit < 1:
            raise ValidationError(f"limit must be at least 1, not {limit}", field="limit")
        if status is not None and status not in ("delivered", "failed", "dead"):
            raise ValidationError(
                f"unknown status {printable(status)!r} (delivered, failed, dead)", field="status"
            )
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        present = self.store.read().webhooks
        for record in self.store.delivery_log(limit):
            if record.get("webhook") not in present:
                continue
            key = (str(record.get("webhook")), str(record.get("id")))
            latest.pop(key, None)
            latest[key] = record
        found = [_delivery(r) for r in latest.values()]
        return [d for d in found if status is None or d.status == status]

    # claim, post, settle ------------------------------------------------------------------

    def _claim(self, timeout_s: float) -> list[_Claim]:
        """Under the delivery lock: take in the outbox entries written since the last look
        (opening lanes for endpoints that want them), then claim every lane with an event
        due now and not claimed by a live deliverer: its next events (a run)."""
        state = self.store.read()
        hooks = {i: _webhook(i, d) for i, d in state.webhooks.items()}
        now = self.store.clock().timestamp()
        claims: list[_Claim] = []
        with self.store.delivery() as held:
            doc = held.doc
            lanes: dict[str, dict[str, Any]] = doc.setdefault("lanes", {})
            last: dict[str, int] = doc.setdefault("last", {})
            for key in [k for k in lanes if k.split("\t")[0] not in hooks]:
                del lanes[key]  # the endpoint was removed
            scanned = int(doc.get("scanned", 0))
            while True:
                entries = self.store.outbox_read(scanned, 1000)
                if not entries:
                    break
                for entry in entries:
                    kind = entry.get("model_type") or ""
                    last[kind] = entry["seq"]
                    for hook_id, hook in hooks.items():
                        if entry["n"] <= state.webhooks[hook_id]["after"]:
                            continue
                        if hook.model_type is not None and hook.model_type != kind:
                            continue
                        lanes.setdefault(
                            f"{hook_id}\t{kind}",
                            {"next": entry["seq"], "from": entry["n"] - 1, "attempts": 0,
                             "due": 0.0, "claim": None, "until": 0.0},
                        )
                scanned = entries[-1]["n"]
            doc["scanned"] = scanned
            for key, lane in sorted(lanes.items()):
                hook_id, kind = key.split("\t")
                if lane["next"] > last.get(kind, 0):
                    continue  # nothing to send
                if lane["due"] > now or (lane["claim"] is not None and lane["until"] > now):
                    continue  # a retry not yet due, or another deliverer has it
                token = uuid.uuid4().hex
                lane["claim"], lane["until"] = token, now + timeout_s * RUN + LEASE_MARGIN_S
                claims.append(_Claim(key, token, hooks[hook_id], kind, dict(lane)))
        for claim in claims:
            claim.entries = self._run_of(claim)
        return claims

    def _run_of(self, claim: _Claim) -> list[dict[str, Any]]:
        """The lane's next events in sequence order (at most RUN)."""
        found: list[dict[str, Any]] = []
        after = int(claim.lane["from"])
        while len(found) < RUN:
            entries = self.store.outbox_read(after, 1000)
            if not entries:
                break
            for entry in entries:
                if (entry.get("model_type") or "") == claim.kind and (
                    entry["seq"] >= claim.lane["next"]
                ):
                    found.append(entry)
                    if len(found) == RUN:
                        break
            after = entries[-1]["n"]
        return found

    def _post_run(
        self, claim: _Claim, timeout_s: float, deadline: float | None, cut: bool = False
    ) -> list[tuple[dict[str, Any], str, int | None, str | None]]:
        """Post the run's events in order, stopping at the first failure (or when the
        deadline passes): (entry, delivered|skipped|failed, status code, error) each. With
        `cut` (a timeout shorter than the endpoint's), a post that times out stops the run
        with no outcome for it."""
        import orjson

        secret = self.store.secret(claim.hook.id)
        outcomes: list[tuple[dict[str, Any], str, int | None, str | None]] = []
        for entry in claim.entries:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not claim.hook.wants(entry):
                outcomes.append((entry, "skipped", None, None))
                continue
            if secret is None:
                outcomes.append((entry, "failed", None, "no signing secret is kept for it"))
                break
            body = orjson.dumps(
                {k: entry.get(k) for k in ("id", "seq", "model_type", "event", "ts", "data")}
            )
            ts = int(self.store.clock().timestamp())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "mlops-webhook",
                "X-Mlops-Event-Id": str(entry["id"]),
                "X-Mlops-Event": str(entry.get("event")),
                "X-Mlops-Sequence": str(entry["seq"]),
                "X-Mlops-Timestamp": str(ts),
                "X-Mlops-Signature": signature(secret, ts, body),
            }
            try:
                code = self.post(claim.hook.url, body, headers, timeout_s)
            except OSError as exc:
                if cut and _timed_out(exc):
                    break
                failed = getattr(exc, "code", None)
                outcomes.append((entry, "failed", failed, _reason(exc)))
                break
            if not 200 <= code < 300:
                outcomes.append((entry, "failed", code, f"HTTP {code}"))
                break
            outcomes.append((entry, "delivered", code, None))
        return outcomes

    def _settle(
        self,
        claim: _Claim,
        outcomes: list[tuple[dict[str, Any], str, int | None, str | None]],
        report: DeliveryReport,
    ) -> None:
        """Under the delivery lock: move the lane past what was delivered (or dead), back
        off on a failure, log each outcome, release the claim. A claim whose lease ran out
        and was taken by another deliverer only logs."""
        settings = self.store.read().settings.data.get("webhooks") or {}
        max_attempts = int(settings.get("max_attempts", 8))
        base_s = float(settings.get("backoff_s", 10.0))
        now = self.store.clock()
        with self.store.delivery() as held:
            lane = held.doc.get("lanes", {}).get(claim.key)
            ours = lane is not None and lane.get("claim") == claim.token
            attempts = int(lane["attempts"]) if ours and lane is not None else 0
            for entry, status, code, error in outcomes:
                if status == "skipped":
                    if ours and lane is not None:
                        lane.update(next=entry["seq"] + 1, attempts=0, due=0.0)
                        lane["from"] = entry["n"]
                    continue
                attempt = attempts + 1
                if status == "failed":
                    attempts += 1
                    if attempts >= max_attempts:
                        status = "dead"
                self._log(held, claim, entry, status, attempt, code, error, now.timestamp())
                if status == "delivered":
                    report.delivered += 1
                elif status == "dead":
                    report.dead += 1
                else:
                    report.failed += 1
                    report.errors.append(f"{claim.hook.id} {entry['id']}: {error}")
                if not (ours and lane is not None):
                    continue
                if status == "failed":
                    lane.update(attempts=attempts, due=now.timestamp() + backoff_s(
                        attempts, base_s))
                else:
                    lane.update(next=entry["seq"] + 1, attempts=0, due=0.0)
                    lane["from"] = entry["n"]
                    attempts = 0
            if ours and lane is not None:
                lane.update(claim=None, until=0.0)

    @staticmethod
    def _log(
        held: DeliveryState,
        claim: _Claim,
        entry: dict[str, Any],
        status: str,
        attempt: int,
        code: int | None,
        error: str | None,
        now: float,
    ) -> None:
        from datetime import datetime, timezone

        held.log.append(
            {
                "ts": stamp(datetime.fromtimestamp(now, timezone.utc)),
                "webhook": claim.hook.id,
                "id": entry["id"],
                "model_type": entry.get("model_type"),
                "seq": entry["seq"],
                "event": entry.get("event"),
                "status": status,
                "attempt": attempt,
                "http_status": code,
                "error": error,
            }
        )

    def _release(self, claim: _Claim) -> None:
        with self.store.delivery() as held:
            lane = held.doc.get("lanes", {}).get(claim.key)
            if lane is not None and lane.get("claim") == claim.token:
                lane.update(claim=None, until=0.0)

    def _pending(self) -> int:
        """Events still to go to some endpoint (by the lanes' counts; retries included)."""
        with self.store.delivery() as held:
            last = held.doc.get("last", {})
            return sum(
                max(0, int(last.get(key.split("\t")[1], 0)) - int(lane["next"]) + 1)
                for key, lane in held.doc.get("lanes", {}).items()
            )


@dataclass
class _Claim:
    key: str  # "<webhook id>\t<model type>"
    token: str
    hook: Webhook
    kind: str  # the model type ("" for events of none)
    lane: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)


def _webhook(hook_id: str, doc: dict[str, Any]) -> Webhook:
    return Webhook(hook_id, doc["url"], list(doc["events"]), doc.get("model_type"),
                   doc["created_at"])


def _delivery(record: dict[str, Any]) -> Delivery:
    return Delivery(
        webhook=str(record.get("webhook")),
        id=str(record.get("id")),
        model_type=record.get("model_type"),
        seq=int(record.get("seq") or 0),
        event=str(record.get("event")),
        status=str(record.get("status")),
        attempt=int(record.get("attempt") or 0),
        ts=str(record.get("ts")),
        http_status=record.get("http_status"),
        error=record.get("error"),
    )


def _timed_out(exc: OSError) -> bool:
    """A post that ran out of time (urllib wraps one in connecting in a URLError)."""
    return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)


def _reason(exc: OSError) -> str:
    """A failed post in a few words (no body of the answer: it may echo anything)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return f"HTTP {code}"
    reason = getattr(exc, "reason", None) or exc.strerror or exc
    return printable(str(reason))[:200]
