"""The naive baseline: a hand-written script that reads rows into Python and POSTs one record per request.

It is what a first attempt looks like: ``SELECT *`` with DuckDB's Python API, one dict per
row, ``json.dumps``, and ``urllib.request`` with a new connection per request (like
``requests.post`` without a session), sequentially. It runs on a prefix of the table and
its rate is extrapolated to the full table.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from benchmarks.limits import SyncPlan
from benchmarks.project import BenchProject
from heap_dbt import heap

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy


@dataclass(frozen=True)
class Baseline:
    rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def _payload(row: dict[str, Any], plan: SyncPlan, app_id: str) -> dict[str, Any]:
    spec = plan.spec
    properties = {prop: row[col] for prop, col in spec.properties.items() if row[col] is not None}
    if spec.object == "user":
        return {"app_id": app_id, "identity": row[spec.key], "properties": properties}
    if spec.object == "account":
        return {"app_id": app_id, "account_id": row[spec.key], "properties": properties}
    assert spec.identity is not None
    ts = row[spec.timestamp] if spec.timestamp else None
    return {
        "app_id": app_id,
        "identity": row[spec.identity],
        "event": spec.event_name,
        "timestamp": ts.isoformat() if isinstance(ts, dt.datetime) else ts,
        "idempotency_key": row[spec.key],
        "properties": properties,
    }


def naive_baseline(
    project: BenchProject, plan: SyncPlan, base_url: str, *, rows: int, app_id: str
) -> Baseline:
    """Send the first ``rows`` rows of the model one request at a time; the sink counts them."""
    import duckdb

    url = base_url + heap.ENDPOINTS[plan.spec.object][0]
    started = time.perf_counter()
    con = duckdb.connect(str(project.database), read_only=True)
    try:
        cursor = con.execute(f"SELECT * FROM {plan.relation} LIMIT {int(rows)}")
        names = [d[0] for d in cursor.description or []]
        sent = 0
        for values in cursor.fetchall():
            body = json.dumps(_payload(dict(zip(names, values, strict=True)), plan, app_id), default=str)
            request = urllib.request.Request(
                url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
            )
            with _OPENER.open(request, timeout=30) as response:
                response.read()
            sent += 1
    finally:
        con.close()
    return Baseline(sent, time.perf_counter() - started)
