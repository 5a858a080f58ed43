"""The fault and load suite behind the manual's Reliability table: ``make reliability``.

    python -m benchmarks.reliability            # the full run, for the README
    python -m benchmarks.reliability --quick    # small; what the test suite runs

It copies the sample dbt project, builds it with real dbt, adds two models (users and events
over ``range(N)``, every value a function of the row number) and runs the real ``heap-dbt sync``
CLI over loopback against the Heap emulator, once per scenario, each from an empty sync state
and an empty emulator: a load run, random 5xx, 429 and dropped connections, a full outage that
ends while the sync runs, an outage longer than the retries, and SIGKILLs mid-sync. After each
scenario it compares what the emulator stored with the model, row by row:

- **rows lost**: users whose properties Heap does not hold exactly, plus events whose ``n`` is
  not among the stored events. It must be 0.
- **events duplicated**: stored events minus distinct ``n``, i.e. events Heap keeps twice. The
  emulator, like Heap, keeps the first event per idempotency key, so this is 0 unless heap-dbt
  sent one row under two keys. Events that arrived again and Heap dropped as repeats are
  reported separately as "resent, deduplicated": resending is how a lost answer is survived.

Then it runs the bad-input catalogue (``tests/integration/test_bad_input.py``, ``CASES``) through
the test's own function, and counts the cases whose error was clear by the test's criteria.
Throttling rows come from ``benchmarks/throttle.py`` when that module is present.

Every check is one row ``{"check", "result", "ok"}``; they print as one Markdown table, and the
exit code is 1 if any ``ok`` is false. ``ok`` None means "not measured here".
"""

from __future__ import annotations

import os

os.environ.setdefault("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")  # before anything imports it

import argparse
import contextlib
import importlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/reliability.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.project import BenchProject, dbt_command
from benchmarks.syncs import drop_state, heap_dbt_command, log
from heap_dbt.emulator import HeapEmulator, RunningEmulator, run_in_thread
from heap_dbt.report import RESULTS_FILE

Row = dict[str, Any]
"""One line of the table: ``{"check": str, "result": str, "ok": bool | None}``."""

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_dbt_project"
OUT_DIR = ROOT / "benchmarks" / "out"
APP_ID = "4815162342"
USERS, EVENTS = "rel_users", "rel_events"
NO_LIMITS = ("--events-per-minute", "0", "--events-per-identity-per-minute", "0")

USERS_SQL = """\
select 'u' || i || '@example.com' as email, 'plan' || (i % 5) as plan, i as score
from range({{ var('rel_rows', 1000) }}) t(i)
"""
EVENTS_SQL = """\
select 'ev' || i as id, 'u' || (i % 997) || '@example.com' as who, i as n
from range({{ var('rel_rows', 1000) }}) t(i)
"""
SCHEMA_YML = """\
version: 2
models:
  - name: rel_users
    config:
      meta:
        heap: {object: user, key: email, fields: {plan: plan, score: score}}
  - name: rel_events
    config:
      meta:
        heap: {object: event, key: id, identity: who, event_name: Ping}
"""


@dataclass(frozen=True)
class Sizes:
    """How big each part of the suite is; ``QUICK`` is what CI runs, ``FULL`` the README's figures."""

    rows: int
    """Rows of each of the two models: the sync reads twice this."""
    load_concurrency: int
    load_batch: int
    load_latency: float
    fault_batch: int
    fault_rate: float
    outage_seconds: float
    kills: int
    kill_batch: int
    kill_latency: float
    kill_after: tuple[float, float]
    """Each kill comes this many seconds (uniform) after the run's first request reached Heap."""
    bad_input_every: int
    """Try every Nth case of the bad-input catalogue (1: all of them)."""


QUICK = Sizes(
    rows=2_000,
    load_concurrency=16,
    load_batch=100,
    load_latency=0.02,
    fault_batch=100,
    fault_rate=0.1,
    outage_seconds=1.0,
    kills=2,
    kill_batch=16,
    kill_latency=0.05,
    kill_after=(1.1, 1.8),
    bad_input_every=18,
)
FULL = Sizes(
    rows=100_000,
    load_concurrency=32,
    load_batch=1000,
    load_latency=0.05,
    fault_batch=500,
    fault_rate=0.1,
    outage_seconds=5.0,
    kills=10,
    kill_batch=100,
    kill_latency=0.03,
    kill_after=(1.2, 2.5),
    bad_input_every=1,
)


class SuiteError(RuntimeError):
    """The suite itself could not run (a dbt build failed); no figure would be true."""


# --------------------------------------------------------------------------------------------------
# The project and one sync.


def build_projects(workdir: Path, sizes: Sizes, sample: Path | None) -> tuple[Path, Path]:
    """A dbt-built sample project (for the bad inputs) and a copy of it with the two models added."""
    pristine = workdir / "sample"
    if sample is None:
        _copy(SAMPLE, pristine)
        log("dbt build of the sample project")
        _dbt(pristine, "build")
    else:
        _copy(sample, pristine, keep_build=True)
    faults = workdir / "faults"
    _copy(pristine, faults, keep_build=True)
    models = faults / "models" / "reliability"
    models.mkdir(parents=True)
    (models / f"{USERS}.sql").write_text(USERS_SQL)
    (models / f"{EVENTS}.sql").write_text(EVENTS_SQL)
    (models / "schema.yml").write_text(SCHEMA_YML)
    log(f"dbt run of {USERS} and {EVENTS}, {sizes.rows:,} rows each")
    _dbt(faults, "run", "-s", f"{USERS} {EVENTS}", "--vars", json.dumps({"rel_rows": sizes.rows}))
    return pristine, faults


def _copy(source: Path, dest: Path, *, keep_build: bool = False) -> None:
    ignore = None if keep_build else shutil.ignore_patterns("target", "logs", "*.duckdb*", "dbt_packages")
    shutil.copytree(source, dest, ignore=ignore)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEAP_", "DBT_"))}
    env.update(DBT_SEND_ANONYMOUS_USAGE_STATS="false", DBT_PARTIAL_PARSE="false", **extra)
    return env


def _dbt(project: Path, *args: str) -> None:
    done = subprocess.run(
        [*dbt_command(), *args, "--profiles-dir", ".", "--quiet"],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SuiteError(f"`dbt {' '.join(args)}` failed in {project}:\n{tail}")


@dataclass
class Run:
    """One ``heap-dbt sync`` of the two models: exit code, and counts summed over both."""

    exit_code: int
    read: int = 0
    sent: int = 0
    failed: int = 0
    rejected: int = 0
    accounted: bool = True
    """Every row read is in exactly one of sent, unchanged, rejected and failed."""


class Scenario:
    """One scenario: a fresh sync state and emulator, the faults, then checks against the model."""

    def __init__(self, heap: RunningEmulator, project: Path, rows: int) -> None:
        self.heap = heap
        self.emulator: HeapEmulator = heap.emulator
        self.project = project
        self.rows = rows
        self.env = _env(HEAP_BASE_URL=heap.url, HEAP_APP_ID=APP_ID)
        drop_state(BenchProject(root=project, database=project / "heap_demo.duckdb"))
        self.faults()
        self.emulator.reset()

    def faults(self, **settings: Any) -> None:
        """Set the emulator's faults: all off, then ``settings``."""
        off: dict[str, Any] = {
            "script": [], "fail_rate": 0.0, "throttle_rate": 0.0, "drop_rate": 0.0,
            "drop_response_rate": 0.0, "delay": 0.0, "outage_seconds": 0.0,
            "drop_connection_next": 0, "drop_response_next": 0,
            "events_per_minute": None, "events_per_identity_per_minute": None,
        }  # fmt: skip
        self.emulator.configure(**{**off, **settings})

    def command(self, *args: str) -> list[str]:
        return [*heap_dbt_command(), "sync", "-s", f"{USERS} {EVENTS}", *NO_LIMITS, *args]

    def sync(self, *args: str, during: Callable[[subprocess.Popen[str]], None] | None = None) -> Run:
        """Run the sync to its end (``during`` is called while it runs) and read its report."""
        results = self.project / "target" / RESULTS_FILE
        results.unlink(missing_ok=True)
        with subprocess.Popen(
            self.command(*args),
            cwd=self.project,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            if during is not None:
                during(proc)
            out, err = proc.communicate(timeout=600)
        if proc.returncode not in (0, 1) or not results.exists():
            raise SuiteError(f"heap-dbt sync exited {proc.returncode}:\n{out[-2000:]}\n{err[-2000:]}")
        run = Run(exit_code=proc.returncode)
        for s in json.loads(results.read_text())["syncs"]:
            run.read += s["read"]
            run.sent += s["sent"]
            run.failed += s["failed"]
            run.rejected += s["rejected"]
            run.accounted &= s["read"] == s["sent"] + s["unchanged"] + s["rejected"] + s["failed"]
        return run

    def kill_mid_sync(self, wait: float, *, batch: int) -> bool:
        """Start a sync and SIGKILL it ``wait`` s after its first request; False if it ended first.

        Acknowledgements are saved every second, so a wait over a second leaves some saved.
        """
        with subprocess.Popen(
            self.command("--concurrency", "2", "--batch-size", str(batch)),
            cwd=self.project,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc:
            start = self.emulator.counts()["requests"]
            while proc.poll() is None and self.emulator.counts()["requests"] == start:
                time.sleep(0.01)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
            killed = proc.poll() is None
            if killed:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        return killed

    def check(self) -> dict[str, int]:
        """Compare what Heap holds with the two models, row by row."""
        state = self.emulator.snapshot()
        users = state["users"].get(APP_ID, {})
        lost_users = sum(
            users.get(f"u{i}@example.com") != {"plan": f"plan{i % 5}", "score": i} for i in range(self.rows)
        )
        stored = [e["properties"].get("n") for e in state["events"]]
        distinct = set(stored)
        lost_events = sum(i not in distinct for i in range(self.rows))
        return {
            "lost": lost_users + lost_events,
            "duplicated": len(stored) - len(distinct),
            "resent_deduplicated": state["duplicate_events"],
            "requests": sum(state["requests"].values()),
            "peak_in_flight": state["peak_in_flight"],
            "outage_refused": state["outage_refused"],
            "dropped": sum(1 for r in state["request_log"] if r["status"] is None),
            **{f"status_{k}": v for k, v in state["status_counts"].items()},
        }


@dataclass
class Outcome:
    """What a scenario did, for the table and the JSON."""

    name: str
    setup: str
    figures: dict[str, Any] = field(default_factory=dict)
    survived: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.survived and self.figures["lost"] == 0 and self.figures["duplicated"] == 0


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _pct(value: float) -> str:
    return f"{value:.0%}"


# --------------------------------------------------------------------------------------------------
# The scenarios.


def load(s: Scenario, sizes: Sizes) -> Outcome:
    s.faults(delay=sizes.load_latency)
    started = time.perf_counter()
    run = s.sync("--concurrency", str(sizes.load_concurrency), "--batch-size", str(sizes.load_batch))
    wall = time.perf_counter() - started
    figures = {**s.check(), "wall_s": round(wall, 2), "read": run.read}
    return Outcome(
        "load",
        f"{_n(s.rows)} users + {_n(s.rows)} events, --concurrency {sizes.load_concurrency}, "
        f"--batch-size {sizes.load_batch}, "
        f"{sizes.load_latency * 1000:.0f} ms latency per request",
        figures,
        survived=run.exit_code == 0 and run.accounted and run.sent == run.read == 2 * s.rows,
    )


def random_faults(s: Scenario, sizes: Sizes, name: str, setup: str, **faults: float) -> Outcome:
    s.faults(seed=sum(map(ord, name)), **faults)
    run = s.sync("--batch-size", str(sizes.fault_batch))
    return Outcome(
        name,
        setup,
        {**s.check(), "read": run.read, "failed": run.failed},
        survived=run.exit_code == 0 and run.accounted and run.sent == run.read == 2 * s.rows,
    )


def outage(s: Scenario, sizes: Sizes) -> Outcome:
    """Every request fails for ``outage_seconds`` once a quarter of the sync is stored; then recovery."""

    def start_outage(proc: subprocess.Popen[str]) -> None:
        while proc.poll() is None and s.emulator.counts()["stored"] < s.rows // 2:
            time.sleep(0.005)
        s.faults(outage_seconds=sizes.outage_seconds, delay=0.05)

    s.faults(delay=0.05)
    run = s.sync("--batch-size", str(sizes.fault_batch), "--concurrency", "4", during=start_outage)
    figures = {**s.check(), "read": run.read, "failed": run.failed}
    return Outcome(
        "outage",
        f"every request answered 503 for {sizes.outage_seconds:g} s, from a quarter into the sync",
        figures,
        survived=figures["outage_refused"] > 0
        and run.exit_code == 0
        and run.accounted
        and run.sent == run.read == 2 * s.rows,
    )


def long_outage(s: Scenario, sizes: Sizes) -> Outcome:
    """An outage the retries cannot outlast: rows are counted failed, never sent, and go next run."""
    s.faults(outage_seconds=600)
    first = s.sync("--max-attempts", "2")
    s.faults()
    second = s.sync()
    figures = {**s.check(), "first_exit": first.exit_code, "first_failed": first.failed}
    figures["second_sent"] = second.sent
    return Outcome(
        "long outage",
        "every request answered 503 for the whole run (--max-attempts 2), then Heap is back",
        figures,
        survived=first.exit_code == 1
        and first.accounted
        and first.sent == 0
        and first.failed == 2 * s.rows
        and second.exit_code == 0
        and second.sent == 2 * s.rows,
    )


def sigkills(s: Scenario, sizes: Sizes) -> Outcome:
    rng = random.Random(20261128)
    s.faults(delay=sizes.kill_latency)
    kills = sum(
        s.kill_mid_sync(rng.uniform(*sizes.kill_after), batch=sizes.kill_batch) for _ in range(sizes.kills)
    )
    s.faults()
    final = s.sync()
    again = s.sync()
    figures = {**s.check(), "kills": kills, "final_sent": final.sent, "rerun_sent": again.sent}
    return Outcome(
        "SIGKILL",
        f"heap-dbt killed with SIGKILL mid-sync {sizes.kills} times ({sizes.kill_after[0]:g} to "
        f"{sizes.kill_after[1]:g} s after its first request), then run to the end",
        figures,
        survived=kills == sizes.kills
        and final.exit_code == 0
        and final.accounted
        and final.sent < 2 * s.rows  # the acknowledgements made before the kills were kept
        and again.sent == 0,
    )


def run_scenarios(heap: RunningEmulator, project: Path, sizes: Sizes) -> list[Outcome]:
    rate = sizes.fault_rate
    steps: list[tuple[str, Callable[[Scenario], Outcome]]] = [
        ("load", lambda s: load(s, sizes)),
        (
            "5xx",
            lambda s: random_faults(
                s, sizes, "5xx", f"{_pct(rate)} of requests answered 500", fail_rate=rate
            ),
        ),
        (
            "429",
            lambda s: random_faults(
                s, sizes, "429", f"{_pct(rate)} of requests answered 429", throttle_rate=rate
            ),
        ),
        (
            "drop",
            lambda s: random_faults(
                s,
                sizes,
                "drop",
                f"{_pct(rate / 2)} of connections closed before Heap read the body, "
                f"{_pct(rate / 2)} after it stored it (the answer lost)",
                drop_rate=rate / 2,
                drop_response_rate=rate / 2,
            ),
        ),
        ("outage", lambda s: outage(s, sizes)),
        ("long outage", lambda s: long_outage(s, sizes)),
        ("SIGKILL", lambda s: sigkills(s, sizes)),
    ]
    outcomes = []
    for name, step in steps:
        log(f"scenario: {name}")
        started = time.perf_counter()
        outcome = step(Scenario(heap, project, sizes.rows))
        outcome.seconds = round(time.perf_counter() - started, 1)
        outcomes.append(outcome)
    return outcomes


# --------------------------------------------------------------------------------------------------
# Bad input: the catalogue of tests/integration/test_bad_input.py, through the test's own function.


def bad_inputs(heap: RunningEmulator, sample: Path, workdir: Path, every: int) -> dict[str, Any]:
    from tests.integration import test_bad_input as catalogue

    cases = catalogue.CASES[::every]
    unclear: list[str] = []
    for i, case in enumerate(cases):
        project = workdir / "bad-input" / case.id / "heap_demo"
        _copy(sample, project, keep_build=True)
        heap.emulator.reset()
        before = len(unclear)
        try:
            catalogue.test_bad_input_gets_a_clear_error_and_nothing_is_sent(case, project, heap)
        except AssertionError:
            unclear.append(case.id)
        except Exception as exc:  # the case could not run: not a clear error either, and said so
            unclear.append(f"{case.id} ({type(exc).__name__}: {exc})")
        shutil.rmtree(project.parent)
        log(f"bad input {i + 1}/{len(cases)}: {case.id}{' (UNCLEAR)' if len(unclear) > before else ''}")
    return {"catalogue": len(catalogue.CASES), "tried": len(cases), "clear": len(cases) - len(unclear),
            "unclear": unclear}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Throttling: rows from benchmarks/throttle.py.


def throttle_rows(*, quick: bool) -> list[Row]:
    """THROTTLING GOES HERE: ``benchmarks.throttle.measure(quick=...)`` rows, added to the table as is.

    That module measures the share of the fastest legal schedule heap-dbt reaches and the share of
    requests answered 429; it is built separately, so this tree may not have it yet.
    """
    try:
        throttle = importlib.import_module("benchmarks.throttle")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.throttle":
            raise
        return [
            {"check": "throttling", "result": "not measured: benchmarks/throttle.py is not here", "ok": None}
        ]
    rows: list[Row] = throttle.measure(quick=quick)
    return rows


# --------------------------------------------------------------------------------------------------
# The table.


def scenario_rows(outcomes: Sequence[Outcome]) -> list[Row]:
    rows: list[Row] = []
    for o in outcomes:
        f = o.figures
        tail = f"{_n(f['lost'])} lost, {_n(f['duplicated'])} duplicated"
        if f["resent_deduplicated"]:
            tail += f" ({_n(f['resent_deduplicated'])} resent events deduplicated by Insert ID)"
        if o.name == "load":
            result = (
                f"{_n(f['read'])} rows in {_n(f['requests'])} requests, "
                f"peak {f['peak_in_flight']} in flight; {tail}"
            )
        elif o.name == "outage":
            result = f"{_n(f['outage_refused'])} requests refused, then the sync recovered, exit 0; {tail}"
        elif o.name == "long outage":
            result = (
                f"run 1: exit {f['first_exit']}, {_n(f['first_failed'])} rows failed, none counted sent; "
                f"run 2 sent them, exit 0; {tail}"
            )
        elif o.name == "SIGKILL":
            result = (
                f"{f['kills']} kills; the next run sent the {_n(f['final_sent'])} rows not yet "
                f"acknowledged, exit 0, and a re-run sent {f['rerun_sent']}; {tail}"
            )
        else:
            status = {"5xx": "status_500", "429": "status_429"}.get(o.name)
            hit = f.get(status, 0) if status else f["dropped"]
            result = (
                f"{_n(hit)} of {_n(f['requests'])} requests hit, retried; one run, exit 0, "
                f"{_n(f['failed'])} failed; {tail}"
            )
        rows.append({"check": f"{o.name}: {o.setup}", "result": result, "ok": o.ok})
    lost = sum(o.figures["lost"] for o in outcomes)
    duplicated = sum(o.figures["duplicated"] for o in outcomes)
    rows.append({"check": "rows lost, all scenarios", "result": _n(lost), "ok": lost == 0})
    rows.append(
        {"check": "events stored twice, all scenarios", "result": _n(duplicated), "ok": duplicated == 0}
    )
    return rows


def bad_input_row(found: Mapping[str, Any]) -> Row:
    of = (
        ""
        if found["tried"] == found["catalogue"]
        else f" (every case of {found['catalogue']} would be the full run)"
    )
    unclear = f"; unclear: {', '.join(found['unclear'])}" if found["unclear"] else ""
    return {
        "check": "bad input: the catalogue of tests/integration/test_bad_input.py",
        "result": f"{found['clear']} of {found['tried']} tried got a clear error{of}{unclear}",
        "ok": found["clear"] == found["tried"],
    }


def markdown(rows: Sequence[Row]) -> str:
    marks = {True: "yes", False: "**NO**", None: "n/a"}
    lines = ["| check | result | ok |", "|---|---|---|"]
    lines += [f"| {r['check']} | {r['result']} | {marks[r['ok']]} |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reliability", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="the small version CI runs")
    parser.add_argument("--sample", type=Path, help="an already dbt-built copy of sample_dbt_project to use")
    parser.add_argument("--workdir", type=Path, help="where to build the projects (default: a temporary dir)")
    parser.add_argument(
        "--out", type=Path, help="JSON results (default: benchmarks/out/reliability[-quick].json)"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="heap-dbt-reliability-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    out = args.out or OUT_DIR / ("reliability-quick.json" if args.quick else "reliability.json")
    started = time.perf_counter()
    with _workdir(args.workdir) as workdir, run_in_thread() as heap:
        try:
            sample, project = build_projects(workdir, sizes, args.sample)
            outcomes = run_scenarios(heap, project, sizes)
            found = bad_inputs(heap, sample, workdir, sizes.bad_input_every)
        except SuiteError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    rows = [*scenario_rows(outcomes), *throttle_rows(quick=args.quick), bad_input_row(found)]
    print(markdown(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "quick": args.quick,
        "sizes": asdict(sizes),
        "seconds": round(time.perf_counter() - started, 1),
        "scenarios": [{**asdict(o), "ok": o.ok} for o in outcomes],
        "bad_input": found,
        "rows": rows,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"done in {doc['seconds']} s; JSON in {out}")
    return 1 if any(r["ok"] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
