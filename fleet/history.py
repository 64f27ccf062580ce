"""The monitor's history: telemetry figures and state changes, in an SQLite file by default
(~/.local/state/edgefleet/history.sqlite) or in PostgreSQL (a postgresql:// URL), so that
several operator machines share one store. SQLAlchemy Core speaks both.

Raw rows (one per telemetry message) are kept `raw_retention_s` (a day); per-minute averages
of each device's figures are kept `retention_s` (30 days); `maintain()` rolls up and deletes.
Writing goes through a queue and a thread of its own, in batches, so that ingest never waits
for the disk.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

log = logging.getLogger("edgefleet.history")
ROLLUP_DELAY_S = 300.0
META = sa.MetaData()
FIGURES = ("p50_ms", "p95_ms", "p99_ms", "throughput_per_s", "power_w", "mj_per_inference", "temperature_c",
           "cpu_percent")
TELEMETRY = sa.Table(
    "telemetry", META,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(128), nullable=False), sa.Column("ts", sa.Float, nullable=False),
    sa.Column("model", sa.String(128)), sa.Column("version", sa.String(64)),
    *(sa.Column(f, sa.Float) for f in FIGURES), sa.Column("power_source", sa.String(64)),
    sa.Index("telemetry_ts", "ts"), sa.Index("telemetry_device_ts", "device_id", "ts"))
MINUTES = sa.Table(
    "telemetry_minutes", META,
    sa.Column("device_id", sa.String(128), primary_key=True), sa.Column("minute", sa.Float, primary_key=True),
    sa.Column("model", sa.String(128)), sa.Column("version", sa.String(64)),
    sa.Column("messages", sa.Integer),
    *(sa.Column(f, sa.Float) for f in FIGURES), sa.Index("minutes_minute", "minute"))
TELEMETRY_COLUMNS = ("device_id", "ts", "model", "version", *FIGURES, "power_source")
EVENTS = sa.Table(
    "events", META,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(128), nullable=False), sa.Column("ts", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False), sa.Column("detail", sa.Text),
    sa.Index("events_ts", "ts"))
EVENT_COLUMNS = ("device_id", "ts", "kind", "detail")
RECORD_EVERY_S = 10.0  # a device's telemetry is recorded at most this often (the agent's default interval)


def default_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edgefleet" / "history.sqlite"


def engine_for(where: str | Path | None) -> sa.Engine:
    """WHERE: a postgresql:// (or sqlite://) URL, a file path, or None for the default file."""
    text = str(where) if where is not None else ""
    if "://" in text:
        url = text
        if text.startswith("postgresql://"):  # psycopg 3, not SQLAlchemy's default psycopg2
            url = text.replace("postgresql://", "postgresql+psycopg://", 1)
        return sa.create_engine(url, pool_pre_ping=True)
    path = Path(text) if text else default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _wal(conn: Any, record: Any) -> None:  # readers (edgefleet report) beside the writing monitor
        conn.execute("PRAGMA journal_mode=WAL")
    return engine


def row_of(device_id: str, telemetry: dict[str, Any]) -> dict[str, Any] | None:
    """The figures of one telemetry message, or None when it carries no time stamp."""
    ts = telemetry.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return None

    def num(value: Any) -> float | None:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def part(key: str) -> dict[str, Any]:
        value = telemetry.get(key)
        return value if isinstance(value, dict) else {}

    inf, power, system, model = part("inference"), part("power"), part("system"), part("model")
    source = power.get("power_source")
    return {"device_id": device_id[:128], "ts": float(ts),
            "model": str(model["name"])[:128] if isinstance(model.get("name"), str) else None,
            "version": str(model["version"])[:64] if isinstance(model.get("version"), str) else None,
            "p50_ms": num(inf.get("latency_p50_ms")), "p95_ms": num(inf.get("latency_p95_ms")),
            "p99_ms": num(inf.get("latency_p99_ms")), "throughput_per_s": num(inf.get("throughput_per_s")),
            "power_w": num(power.get("power_avg_w")),
            "mj_per_inference": num(power.get("energy_per_inference_mj")),
            "temperature_c": num(system.get("temperature_c")),
            "cpu_percent": num(system.get("process_cpu_percent")),
            "power_source": source[:64] if isinstance(source, str) else None}


class History:
    def __init__(self, where: str | Path | None = None, raw_retention_s: float = 86400.0,
                 retention_s: float = 30 * 86400.0):
        self.engine = engine_for(where)
        META.create_all(self.engine)
        self._mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self.raw_retention_s, self.retention_s = raw_retention_s, retention_s
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(maxsize=200_000)
        self._thread: threading.Thread | None = None
        self.dropped = 0  # rows the queue had no room for (the disk cannot keep up)

    # --- writing
    def record_telemetry(self, device_id: str, telemetry: dict[str, Any]) -> None:
        row = row_of(device_id, telemetry)
        if row is not None:
            self._put(("telemetry", row))

    def record_event(self, device_id: str, kind: str, detail: dict[str, Any],
                     ts: float | None = None) -> None:
        self._put(("event", {"device_id": device_id[:128], "ts": time.time() if ts is None else ts,
                             "kind": kind[:32], "detail": orjson.dumps(detail).decode()}))

    def _put(self, item: tuple[str, dict[str, Any]]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def start(self) -> History:
        self._thread = threading.Thread(target=self._write, name="history", daemon=True)
        self._thread.start()
        return self

    def _write(self) -> None:
        last_maintenance = 0.0
        while True:
            batch = [self._queue.get()]
            while len(batch) < 20_000:
                try:
                    batch.append(self._queue.get(timeout=0.5 if len(batch) == 1 else 0))
                except queue.Empty:
                    break
            done = None in batch
            self.write([b for b in batch if b is not None])
            if time.time() - last_maintenance > 60:
                self.maintain()
                last_maintenance = time.time()
            if done:
                return

    def write(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        telemetry = [tuple(row[c] for c in TELEMETRY_COLUMNS) for kind, row in items if kind == "telemetry"]
        events = [tuple(row[c] for c in EVENT_COLUMNS) for kind, row in items if kind == "event"]
        try:
            with self.engine.begin() as conn:
                # the driver's executemany with plain tuples: SQLAlchemy's per-row work in insert()
                # cost more CPU than the monitor's intake of the same messages
                for table, columns, rows in ((TELEMETRY, TELEMETRY_COLUMNS, telemetry),
                                             (EVENTS, EVENT_COLUMNS, events)):
                    if rows:
                        marks = ", ".join([self._mark] * len(columns))
                        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"
                        conn.exec_driver_sql(sql, rows)
        except sa.exc.SQLAlchemyError as exc:  # a store that is away loses these rows, not the monitor
            log.warning("history: could not write %d rows: %s", len(items), exc)

    def flush(self) -> None:
        """Write what waits in the queue now, on this thread (for a History not start()ed)."""
        items = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                items.append(item)
        self.write(items)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(30)
            self._thread = None
        self.engine.dispose()

    # --- retention
    def maintain(self, now: float | None = None) -> None:
        """Roll raw rows up into minutes (once, ROLLUP_DELAY_S after the minute ended, so that late
        messages are in), then drop raw rows past their retention and minutes past theirs. A
        message later still (replayed from a device's spool after a long outage) stays in the
        raw rows only."""
        now = time.time() if now is None else now
        upto = (now - ROLLUP_DELAY_S) // 60 * 60
        minute = sa.func.floor(TELEMETRY.c.ts / 60) * 60
        with self.engine.begin() as conn:
            done = conn.execute(sa.select(sa.func.max(MINUTES.c.minute))).scalar()
            since = (done + 60) if done is not None else 0.0
            averages = [sa.func.avg(getattr(TELEMETRY.c, f)).label(f) for f in FIGURES]
            query = (sa.select(TELEMETRY.c.device_id, minute.label("minute"), sa.func.max(TELEMETRY.c.model),
                               sa.func.max(TELEMETRY.c.version), sa.func.count().label("messages"), *averages)
                     .where(TELEMETRY.c.ts >= since, TELEMETRY.c.ts < upto)
                     .group_by(TELEMETRY.c.device_id, minute))
            columns = ["device_id", "minute", "model", "version", "messages", *FIGURES]
            conn.execute(MINUTES.insert().from_select(columns, query))
            conn.execute(TELEMETRY.delete().where(TELEMETRY.c.ts < now - self.raw_retention_s))
            conn.execute(MINUTES.delete().where(MINUTES.c.minute < now - self.retention_s))
            conn.execute(EVENTS.delete().where(EVENTS.c.ts < now - self.retention_s))

    # --- reading
    def telemetry(self, since: float, until: float | None = None) -> list[dict[str, Any]]:
        """Raw rows where they are kept, else the minutes: oldest first."""
        until = time.time() if until is None else until
        with self.engine.connect() as conn:
            raw = conn.execute(sa.select(TELEMETRY).where(TELEMETRY.c.ts >= since, TELEMETRY.c.ts <= until)
                               .order_by(TELEMETRY.c.ts)).mappings().all()
            first_raw = raw[0]["ts"] if raw else until
            minutes = conn.execute(sa.select(MINUTES).where(MINUTES.c.minute >= since,
                                                            MINUTES.c.minute < first_raw - 60)
                                   .order_by(MINUTES.c.minute)).mappings().all()
        return [{**dict(m), "ts": m["minute"] + 30} for m in minutes] + [dict(r) for r in raw]

    def events(self, since: float) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = sa.select(EVENTS).where(EVENTS.c.ts >= since).order_by(EVENTS.c.ts)
            rows = conn.execute(query).mappings()
            return [{**dict(r), "detail": orjson.loads(r["detail"]) if r["detail"] else {}} for r in rows]


def _state(message: dict[str, Any] | None, *path: str) -> Any:
    value: Any = message
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def recorder(history: History, every_s: float = RECORD_EVERY_S) -> Any:
    """A FleetView listener that records telemetry figures (a device's at most every EVERY_S
    seconds of its own clock), and every state change as an event: `status` (online, offline,
    stopped), `install` (each install state), `active` (another bundle serves)."""
    last: dict[str, float] = {}

    def listen(device_id: str, leaf: str, body: dict[str, Any] | None, before: dict[str, Any] | None) -> None:
        if body is None:
            return
        if leaf == "telemetry":
            ts = body.get("ts")
            if isinstance(ts, (int, float)):
                previous = last.get(device_id)
                if previous is not None and 0 <= ts - previous < every_s:
                    return  # recorded less than EVERY_S ago (a clock set back records at once)
                last[device_id] = float(ts)
            history.record_telemetry(device_id, body)
        elif leaf == "status" and _state(body, "state") != _state(before, "state"):
            history.record_event(device_id, "status", {"state": _state(body, "state")})
        elif leaf == "reported":
            install, active = _state(body, "install", "state"), _state(body, "active", "bundle_id")
            if install != _state(before, "install", "state") and install is not None:
                history.record_event(device_id, "install", {
                    "state": install, "bundle_id": _state(body, "install", "bundle_id"),
                    "stage": _state(body, "install", "stage"), "reason": _state(body, "install", "reason")})
            if active != _state(before, "active", "bundle_id"):
                history.record_event(device_id, "active", {"bundle_id": active,
                                                           "version": _state(body, "active", "version")})
    return listen
