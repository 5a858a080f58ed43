"""Throttling against the emulator with Heap's sliding-window limits on and a faster clock.

    python -m benchmarks.throttle --window 3      # a rate-limit minute passes in 3 s
    python -m benchmarks.throttle --quick         # smaller syncs; what the tests and `make reliability` run

Three event syncs, each a first sync with the real ``heap-dbt sync`` against an emulator that
counts each request when it arrives (``--time-scale``): the per-app limit binding (many
identities), the per-identity limit binding (a few identities), and one identity with events
over several windows. Per sync it prints the requests, the 429s, and the time from the first
request's arrival to the last accepted one's over the fastest schedule the limits allow for
the same requests: each accepted request, in arrival order, at the first moment Heap's
windows (the emulator's rule) have room for it, with no time on the wire or in the server.

No client gets a window's requests into this emulator at once: it takes each request in in
tens of milliseconds, which a scaled window magnifies (at 3 s, 20 times what it is against
Heap's minute). So the check ("ok") compares with the fastest schedule plus the time the
emulator took, in the same run, to take in as many requests as the schedule's last window
holds when nothing held them back: the first ones of the sync. Both ratios are printed.

``--client`` runs another heap-dbt (e.g. an older checkout) the same way; the window reaches
it as HEAP_DBT_RATE_WINDOW.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/throttle.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.project import dbt_command
from heap_dbt.emulator import RATE_WINDOW_SECONDS, KeyedRateWindow, run_in_thread
from heap_dbt.emulator_payloads import TRACK_PATH

APP_ID = "4815162342"
PER_APP = 15_000  # Heap's published limits, heap-dbt's defaults
PER_IDENTITY = 1_000
MAX_429_SHARE = 0.01
MAX_RATIO = 1.10


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    rows: int
    quick_rows: int
    identities: int
    """Events go to identity ``i % identities``."""
    what: str
    per_app: int = PER_APP
    per_identity: int = PER_IDENTITY


SCENARIOS = (
    Scenario(
        "per-app", "throttle_app", 60_000, 30_000, 6_000, "the per-app limit binds: 10 events per identity"
    ),
    Scenario(
        "per-identity", "throttle_identity", 13_000, 7_000, 5, "the per-identity limit binds: 5 identities"
    ),
    Scenario(
        "one identity", "throttle_one", 4_000, 2_000, 1, "one identity, its events over several windows"
    ),
)

_DBT_PROJECT = """\
name: heap_throttle
version: "1.0.0"
config-version: 2
profile: heap_throttle
model-paths: ["models"]
target-path: "target"
models:
  heap_throttle:
    +materialized: table
"""

_PROFILES = """\
heap_throttle:
  target: bench
  outputs:
    bench:
      type: duckdb
      path: {path}
      threads: 1
"""

_MODEL_SQL = """\
select
    'evt-' || lpad(cast(i as varchar), 8, '0') as event_id,
    'user' || cast(i % {identities} as varchar) || '@example.com' as user_email,
    timestamp '2025-06-01 00:00:00' + to_seconds(i) as occurred_at,
    cast(i % 9 as integer) as quantity
from range({rows}) as t(i)
"""

_SCHEMA = """\
  - name: {model}
    config:
      meta:
        heap:
          object: event
          key: event_id
          identity: user_email
          event_name: Purchase
          timestamp: occurred_at
          fields: [quantity]
"""


class ThrottleBenchError(RuntimeError):
    """The project did not build or a sync did not deliver every event."""


def write_project(root: Path, *, quick: bool, scenarios: Sequence[Scenario] = SCENARIOS) -> Path:
    """Write and ``dbt run`` the scenarios' event models; return the project dir (also the profiles dir)."""
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(_DBT_PROJECT)
    (root / "profiles.yml").write_text(
        _PROFILES.format(path=json.dumps(str((root / "throttle.duckdb").resolve())))
    )
    for s in scenarios:
        sql = _MODEL_SQL.format(identities=s.identities, rows=s.quick_rows if quick else s.rows)
        (models / f"{s.model}.sql").write_text(sql)
    (models / "schema.yml").write_text(
        "version: 2\nmodels:\n" + "".join(_SCHEMA.format(model=s.model) for s in scenarios)
    )
    cmd = [*dbt_command(), "run", "--project-dir", str(root), "--profiles-dir", str(root), "--quiet"]
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_PARTIAL_PARSE": "false"}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        raise ThrottleBenchError(f"`dbt run` failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return root.resolve()


def default_client() -> list[str]:
    """``heap-dbt`` next to this interpreter (the venv's), as a user runs it."""
    script = Path(sys.executable).parent / "heap-dbt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "heap_dbt"]


@dataclass(frozen=True)
class Outcome:
    scenario: str
    requests: int
    throttled: int
    events: int
    span: float
    """Real seconds from the first request's arrival to the last accepted one's."""
    fastest: float
    """Real seconds the fastest legal schedule of the same accepted requests takes."""
    intake: float
    """Real seconds the emulator took to take in the first requests, as many as the fastest
    schedule's last window holds: the least its last window can take."""
    wall: float
    """Real seconds of the whole ``heap-dbt sync`` process."""

    @property
    def ratio(self) -> float:
        """Against the fastest schedule on a server that takes no time."""
        return self.span / self.fastest

    @property
    def ratio_here(self) -> float:
        """Against the fastest schedule on this emulator (``intake`` added)."""
        return self.span / (self.fastest + self.intake)

    @property
    def ok(self) -> bool:
        return self.throttled < MAX_429_SHARE * self.requests and self.ratio_here <= MAX_RATIO


def run_scenario(
    project: Path,
    scenario: Scenario,
    *,
    window: float,
    quick: bool,
    client: Sequence[str] | None = None,
    window_flag: bool = False,
) -> Outcome:
    """Sync ``scenario``'s model into a fresh emulator whose minute lasts ``window`` real seconds.

    The window reaches heap-dbt as HEAP_DBT_RATE_WINDOW, or with ``window_flag`` as the hidden
    ``--rate-window``."""
    expected = scenario.quick_rows if quick else scenario.rows
    scale = RATE_WINDOW_SECONDS / window
    with (
        tempfile.TemporaryDirectory(prefix="heap-throttle-") as tmp,
        run_in_thread(
            events_per_minute=scenario.per_app,
            events_per_identity_per_minute=scenario.per_identity,
            time_scale=scale,
        ) as heap,
    ):
        cmd = [
            *(client or default_client()), "sync",
            "--project-dir", str(project), "--profiles-dir", str(project), "--select", scenario.model,
            "--state-path", str(Path(tmp) / "state.duckdb"), "--json",
            "--events-per-minute", str(scenario.per_app),
            "--events-per-identity-per-minute", str(scenario.per_identity),
            *(["--rate-window", repr(window)] if window_flag else []),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HEAP_", "DBT_"))}
        env.update(HEAP_BASE_URL=heap.url, HEAP_APP_ID=APP_ID)
        if not window_flag:
            env["HEAP_DBT_RATE_WINDOW"] = repr(window)
        started = time.perf_counter()
        done = subprocess.run(
            cmd, cwd=project, env=env, capture_output=True, text=True, check=False, timeout=600
        )
        wall = time.perf_counter() - started
        state = heap.emulator.snapshot()
    if done.returncode != 0:
        raise ThrottleBenchError(
            f"heap-dbt sync {scenario.model} exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    if len(state["events"]) != expected or state["duplicate_events"]:
        raise ThrottleBenchError(
            f"{scenario.name}: Heap stored {len(state['events'])} events ({state['duplicate_events']} "
            f"duplicates), expected {expected}"
        )
    return analyse(scenario, state, wall=wall)


def analyse(scenario: Scenario, state: dict[str, Any], *, wall: float) -> Outcome:
    """Requests, 429s and the span against the fastest schedule, from an emulator snapshot."""
    track = [entry for entry in state["request_log"] if entry["path"] == TRACK_PATH]
    accepted = [entry for entry in track if entry["status"] == 200]
    if len(accepted) + sum(entry["status"] == 429 for entry in track) != len(track):
        raise ThrottleBenchError(
            f"{scenario.name}: statuses other than 200 and 429: {Counter(e['status'] for e in track)}"
        )
    # Events are stored in the order requests were accepted, which is the order of the log's 200s.
    requests: list[tuple[float, Counter[str]]] = []
    offset = 0
    for entry in accepted:
        part = state["events"][offset : offset + entry["records"]]
        offset += entry["records"]
        requests.append((entry["at"], Counter(e["identity"] for e in part)))
    requests.sort(key=lambda r: r[0])
    scale = state["time_scale"]
    schedule = fastest_schedule(
        [counts for _, counts in requests], per_app=scenario.per_app, per_identity=scenario.per_identity
    )
    first, last = schedule.count(schedule[0]), schedule.count(schedule[-1])
    burst = min(first, last)  # the first requests went at once: nothing held them back
    return Outcome(
        scenario=scenario.name,
        requests=len(track),
        throttled=len(track) - len(accepted),
        events=offset,
        span=(requests[-1][0] - requests[0][0]) / scale,
        fastest=schedule[-1] / scale,
        intake=(requests[burst - 1][0] - requests[0][0]) / scale,
        wall=wall,
    )


def fastest_schedule(requests: Sequence[Counter[str]], *, per_app: int, per_identity: int) -> list[float]:
    """When each of ``requests`` (per-identity counts, in order) arrives at the earliest if each
    arrives as soon as Heap's windows have room for it, the first at 0 (emulator seconds)."""
    app = KeyedRateWindow(per_app)
    identities = KeyedRateWindow(per_identity)
    now = 0.0
    times: list[float] = []
    for counts in requests:
        total = sum(counts.values())
        while True:
            waits = [app.retry_after("app", total, now)]
            waits += [identities.retry_after(who, n, now) for who, n in counts.items()]
            wait = max((w for w in waits if w is not None), default=None)
            if wait is None:
                break
            now += wait
        app.add("app", total, now)
        for who, n in counts.items():
            identities.add(who, n, now)
        times.append(now)
    return times


def row(outcome: Outcome) -> dict[str, Any]:
    """One line of `make reliability`'s table."""
    return {
        "check": f"throttling, {outcome.scenario}: <1% 429s, within 10% of the fastest schedule",
        "result": f"{outcome.throttled}/{outcome.requests} requests 429; "
        f"{outcome.ratio_here:.3f}x the fastest schedule on the emulator, "
        f"{outcome.ratio:.3f}x on an instant server",
        "ok": outcome.ok,
    }


def measure(*, quick: bool, window: float | None = None, workdir: Path | None = None) -> list[dict[str, Any]]:
    """Build the project, run the three scenarios, return one row per scenario."""
    window = window or 3.0
    with tempfile.TemporaryDirectory(prefix="heap-throttle-project-") as tmp:
        project = write_project(workdir or Path(tmp), quick=quick)
        return [row(run_scenario(project, s, window=window, quick=quick)) for s in SCENARIOS]


def table(outcomes: Sequence[Outcome], *, window: float) -> str:
    lines = [
        f"Window: {window:g} s (Heap's minute, scaled); limits {PER_APP:,} events per app, "
        f"{PER_IDENTITY:,} per identity.",
        "",
        "| scenario | requests | 429s | events | first→last arrival s | fastest s | ratio "
        "| emulator intake s | ratio on the emulator | sync wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {o.scenario} | {o.requests} | {o.throttled} | {o.events:,} | {o.span:.2f} | {o.fastest:.2f} "
        f"| {o.ratio:.3f}x | {o.intake:.2f} | {o.ratio_here:.3f}x | {o.wall:.2f} |"
        for o in outcomes
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throttle", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--window", type=float, default=3.0, help="real seconds in Heap's minute (default 3)")
    parser.add_argument("--quick", action="store_true", help="half-size syncs")
    parser.add_argument("--client", help="the heap-dbt command to measure (default: this venv's heap-dbt)")
    parser.add_argument("--workdir", type=Path, help="where to write the dbt project (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.window <= 0:
        parser.error("--window must be above 0")
    client = shlex.split(args.client) if args.client else None
    with tempfile.TemporaryDirectory(prefix="heap-throttle-project-") as tmp:
        project = write_project(args.workdir or Path(tmp), quick=args.quick)
        outcomes = []
        for s in SCENARIOS:
            print(f"{s.name}: {s.what} ...", file=sys.stderr, flush=True)
            outcomes.append(run_scenario(project, s, window=args.window, quick=args.quick, client=client))
    print(table(outcomes, window=args.window))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
