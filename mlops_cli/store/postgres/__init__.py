"""The PostgreSQL store: one registry and one set of streams for services on many hosts.

psycopg 3 is imported here only, so file projects never pay for it. The registry is held as
rows (model_types, versions, champion_history, ab_tests, settings) and rebuilt into a
`RegistryState` on read; streams are tables a person can query (requests, metrics,
drift_samples, checks, events). See docs/postgresql.md.

The parts: `connection` (connect, redact, database errors as MlopsErrors, the schema version,
the migrations beside it and `upgrade`), `rows` (tables, `route`, records as rows and back),
`copy` (COPY writing, validated batches), `registry` (the registry document and its diff),
`buffer` (the per-request buffer, its flusher and the process hooks), `spool` (what could not
be written at exit, replayed by the next open), `notify` (the registry snapshot's listener:
LISTEN/NOTIFY and a poll) and `store` (the PostgresStore class).

- `transaction()` is one database transaction that first locks the single `settings` row
  FOR UPDATE (every registry change takes it, so two changes never interleave), then writes
  the rows that differ and the events.
- `append()` buffers sample records in the process; a background thread writes them, one
  COPY per stream under a batch id, when 1,000 wait or the oldest has waited 1 s; `flush()`,
  `close()`, exit, a multiprocessing worker's end, SIGTERM and SIGINT write the rest, or spool
  it when the server is away (buffer.py, spool.py). kill -9 and power loss lose what waits
  (about one flush). Checks and events are written at once.
- `append_batch()` is one transaction: the batch id is inserted first (`ON CONFLICT DO
  NOTHING`; a concurrent retry waits on it, then finds it), then one COPY of the validated
  records, committed together.
- `clock` is the database's clock: inside a transaction, that transaction's `now()`; outside,
  the local clock corrected by the offset to the server's `now()`, measured at connect and
  again every 60 s (so per-request stamps cost no round trip).
"""

from .buffer import FLUSH_RECORDS, FLUSH_SECONDS, MAX_BUFFERED
from .connection import LATEST, connect, redact, upgrade
from .copy import text_lines
from .rows import BUFFERED, CHECKS, EVENT_TABLE, METRICS, REQUESTS, SAMPLES, Table, route
from .store import PostgresStore

__all__ = [
    "BUFFERED",
    "CHECKS",
    "EVENT_TABLE",
    "FLUSH_RECORDS",
    "FLUSH_SECONDS",
    "LATEST",
    "MAX_BUFFERED",
    "METRICS",
    "REQUESTS",
    "SAMPLES",
    "PostgresStore",
    "Table",
    "connect",
    "redact",
    "route",
    "text_lines",
    "upgrade",
]
