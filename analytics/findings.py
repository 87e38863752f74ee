"""The findings store: incidents and canary verdicts kept in the lake, so nobody waits for them.

``analytics.anomalies.detect`` and ``analytics.canary.judge`` take seconds (tens at 10M
requests). Their answers only change when the data or the code changes, so they are computed
once, when data lands (``meshlens ingest``, ``meshlens demo``, ``meshlens rollup rebuild`` call
``refresh``, for the window the dashboard opens on), or by the dashboard's background jobs for
any other window, and kept here::

    <lake>/_findings/<kind>-<hash of the key>.json

(the key, then each result's dataclass fields, to rebuild it, and its ``as_dict()``, to show it).

An entry's ``Key`` is: the kind (``incidents`` or ``canaries``), the window, the env and the
service (the arguments of ``detect``/``judge``, as the CLI passes them, so the numbers are the
CLI's), the lake's *data fingerprint* (every folder of ``requests/`` and ``rollups/`` with its
modification time: publishing a file renames it into a folder, which changes that folder's time)
and the *code version* (a hash of the ``analytics`` package's source). A different fingerprint or
code version is a different key, so stale entries are never read; ``save`` deletes the entries of
other fingerprints. Entries are written to a temporary name and renamed into place, so
concurrent writers never leave a torn file (the last rename wins; both wrote the same answer).
The ``_findings`` folder is not part of the data fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from meshlens.lake import Lake
from meshlens.timewin import Window, iso, parse_duration

STORE = "_findings"
KINDS = ("incidents", "canaries")
DATA_FOLDERS = ("requests", "rollups")
DASHBOARD_RANGE = "24h"
"""The range the dashboard opens on (dashboard.state.DEFAULT_RANGE): the window ``refresh`` stores."""
KEEP_ENTRIES = 256
FORMAT = 1
log = logging.getLogger("meshlens.findings")


@dataclass(frozen=True)
class Key:
    """What an entry answers: kind, window, env, service, data fingerprint, code version."""

    kind: str
    start: datetime
    end: datetime
    env: str | None
    service: str | None
    fingerprint: str
    code: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the entry, compared on load)."""
        return {"format": FORMAT, "kind": self.kind, "start": iso(self.start), "end": iso(self.end),
                "env": self.env, "service": self.service, "fingerprint": self.fingerprint, "code": self.code}

    def file_name(self) -> str:
        """The entry's file name: the kind and a hash of the whole key."""
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:32]
        return f"{self.kind}-{digest}.json"


# -- the key ------------------------------------------------------------------------------------
def data_fingerprint(lake: Lake) -> str:
    """A hash of every folder under requests/ and rollups/ with its modification time (ns)."""
    root, seen = lake.root, []
    stack = [root / name for name in DATA_FOLDERS]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                seen.append(f"{folder.relative_to(root)}:{folder.stat().st_mtime_ns}")
                stack.extend(Path(e.path) for e in entries
                             if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
        except OSError:
            continue
    return hashlib.sha256("\n".join(sorted(seen)).encode()).hexdigest()[:24]


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the analytics package's source (new code: new answers)."""
    folder = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def key(lake: Lake, kind: str, window: Window, *, env: str | None = None, service: str | None = None,
        fingerprint: str | None = None) -> Key:
    """The key of ``kind`` over ``window`` on the lake as it is now (or at ``fingerprint``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown findings kind {kind!r}; expected one of {KINDS}")
    return Key(kind, window.start, window.end, env, service,
               fingerprint or data_fingerprint(lake), code_version())


# -- the dashboard's default window ------------------------------------------------------------
def anchor(latest: datetime | None, *, now: datetime) -> datetime:
    """End of the dashboard's preset ranges: the next minute boundary after now, or after the
    newest data when the lake is older than now (whole minutes keep answers valid for a minute)."""
    moment = now if latest is None or latest >= now else latest.astimezone(timezone.utc)
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


def default_window(latest: datetime | None, *, now: datetime) -> Window:
    """The window a first visit of the dashboard shows: DASHBOARD_RANGE ending at the anchor."""
    end = anchor(latest, now=now)
    return Window(end - parse_duration(DASHBOARD_RANGE), end)


# -- reading and writing entries ---------------------------------------------------------------
def store_dir(lake: Lake) -> Path:
    """The folder of the entries."""
    return lake.root / STORE


def load(lake: Lake, entry: Key) -> list[Any] | None:
    """The stored answer of ``entry`` (Incident or CanaryVerdict objects), None when absent."""
    items = _read(lake, entry)
    if items is None:
        return None
    cls = _result_class(entry.kind)
    return [_from_fields(cls, _decode(item["fields"])) for item in items]


def load_dicts(lake: Lake, entry: Key) -> list[dict[str, Any]] | None:
    """The stored answer as the results' ``as_dict()`` (the CLI's JSON), None when absent.

    Reads no analytics module (the detector imports scikit-learn): what a page shows at once.
    """
    items = _read(lake, entry)
    return None if items is None else [item["as_dict"] for item in items]


def _read(lake: Lake, entry: Key) -> list[dict[str, Any]] | None:
    path = store_dir(lake) / entry.file_name()
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("key") != entry.as_dict():
        return None
    return list(stored["results"])


def save(lake: Lake, entry: Key, results: list[Any]) -> Path | None:
    """Store ``results`` under ``entry`` atomically; None (nothing written) when the data moved on."""
    if data_fingerprint(lake) != entry.fingerprint:
        return None  # computed on data that has changed since: a stale answer
    folder = store_dir(lake)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"key": entry.as_dict(), "written_at": iso(datetime.now(timezone.utc)),
               "results": [{"fields": _encode(_fields(r)), "as_dict": _encode(r.as_dict())} for r in results]}
    path = folder / entry.file_name()
    tmp = folder / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(payload, out, allow_nan=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _prune(folder, keep=entry)
    return path


def _prune(folder: Path, *, keep: Key) -> None:
    """Delete entries of other fingerprints or code versions, and the oldest beyond KEEP_ENTRIES."""
    current: list[tuple[float, Path]] = []
    for path in folder.glob("*.json"):
        try:
            stored = json.loads(path.read_text(encoding="utf-8")).get("key", {})
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if stored.get("fingerprint") != keep.fingerprint or stored.get("code") != keep.code:
            path.unlink(missing_ok=True)
        else:
            current.append((mtime, path))
    for _, path in sorted(current)[:-KEEP_ENTRIES]:
        path.unlink(missing_ok=True)


def _result_class(kind: str) -> type:
    if kind == "incidents":
        from analytics.anomalies import Incident

        return Incident
    from analytics.canary import CanaryVerdict

    return CanaryVerdict


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _from_fields(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in values.items() if k in names})


def _encode(value: Any) -> Any:
    """JSON-ready, with datetimes and tuples tagged so that they come back as they were."""
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()  # numpy scalars
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, inner), = value.items()
        if tag == "$tuple":
            return tuple(_decode(v) for v in inner)
        if tag == "$datetime":
            return datetime.fromisoformat(inner)
        if tag == "$date":
            return date.fromisoformat(inner)
    return {k: _decode(v) for k, v in value.items()}


# -- computing ---------------------------------------------------------------------------------
def compute(conn: Any, kind: str, window: Window, *, env: str | None = None,
            service: str | None = None) -> list[Any]:
    """``detect`` or ``judge`` with the CLI's arguments (every canary; no baseline/canary pinned)."""
    if kind == "incidents":
        from analytics import anomalies

        return anomalies.detect(conn, window=window, service=service, env=env)
    if kind == "canaries":
        from analytics import canary

        return canary.judge(conn, service, window=window, env=env)
    raise ValueError(f"unknown findings kind {kind!r}; expected one of {KINDS}")


def get_or_compute(conn: Any, lake: Lake, kind: str, window: Window, *, env: str | None = None,
                   service: str | None = None,
                   run: Callable[..., list[Any]] = compute) -> list[Any]:
    """The stored answer, else ``run(conn, kind, window, env=, service=)`` stored for next time."""
    entry = key(lake, kind, window, env=env, service=service)
    stored = load(lake, entry)
    if stored is not None:
        return stored
    results = run(conn, kind, window, env=env, service=service)
    try:
        save(lake, entry, results)
    except OSError as exc:  # a read-only lake still answers, it only cannot remember
        log.warning("could not store %s in %s: %s", kind, store_dir(lake), exc)
    return results


def refresh(lake: Lake, *, now: datetime | None = None) -> list[Key]:
    """Store both kinds for the dashboard's default window (the CLI calls it after new data).

    Never raises: the data is in, and the dashboard computes what is missing. Returns the keys
    stored (or found already stored).
    """
    try:
        return _refresh(lake, now=now or datetime.now(timezone.utc))
    except Exception as exc:  # noqa: BLE001 - a failed precomputation must not fail the ingest
        log.warning("findings not stored (the dashboard computes them when asked): %s", exc)
        return []


def _refresh(lake: Lake, *, now: datetime) -> list[Key]:
    from analytics import rollup  # noqa: F401 - registers the rollup views
    from analytics.rollup_identity import latest_ts
    from meshlens import catalog

    if not lake.has_files("requests"):
        return []
    conn = catalog.connect(lake)
    window = default_window(latest_ts(conn), now=now)

    def one(kind: str) -> Key:
        cursor = catalog.cursor(conn)  # one per thread: a connection runs one query at a time
        try:
            get_or_compute(cursor, lake, kind, window)
        finally:
            cursor.close()
        return key(lake, kind, window)

    with ThreadPoolExecutor(max_workers=len(KINDS), thread_name_prefix="meshlens-findings") as pool:
        return list(pool.map(one, KINDS))  # both at once: most of their time is outside the GIL
