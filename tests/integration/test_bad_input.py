"""The catalogue of bad input: everything a user can get wrong, and the clear error each one gets.

Each case edits a copy of the dbt-built sample project (the manifest's JSON for meta
errors, so that no case needs its own `dbt run`), runs the real ``heap-dbt sync``, and
asserts: the exact exit code; a message that names the model, column, file, flag or
variable and says what to do; that Heap received nothing; and that no traceback was
printed. ``CASES`` is the list, with readable ids, for whatever wants to count them.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

from heap_dbt.emulator import RunningEmulator
from tests.conftest import heap_dbt

pytestmark = pytest.mark.integration

Setup = Callable[[Path, contextlib.ExitStack], None]
"""Edits the project copy; may hold resources (a lock) on the stack until the run is over."""

USERS = '"heap_demo"."main"."heap_users"'
INJECTION = 'x"; drop table "main"."heap_users"; --'


@dataclass(frozen=True)
class Case:
    id: str
    says: tuple[str, ...]
    """Fragments of the message; ``{project}`` stands for the project dir."""
    setup: tuple[Setup, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    exit_code: int = 2
    to_emulator: bool = True
    """HEAP_BASE_URL is the emulator; else the case sets HEAP_BASE_URL (or not) itself."""
    app_id: bool = True
    not_says: tuple[str, ...] = ()
    tables_untouched: bool = False
    """Count the rows of every warehouse table before and after: nothing may change."""
    command: str = "sync"
    """The heap-dbt command; ``args`` follow it."""


# --- setup steps ---------------------------------------------------------------------------------


def edit_manifest(change: Callable[[dict[str, Any]], None]) -> Setup:
    def setup(project: Path, _: contextlib.ExitStack) -> None:
        path = project / "target" / "manifest.json"
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))

    return setup


def node(doc: dict[str, Any], model: str) -> dict[str, Any]:
    return doc["nodes"][f"model.heap_demo.{model}"]  # type: ignore[no-any-return]


def meta(model: str, heap: Any = None, /, *, drop: tuple[str, ...] = (), **options: Any) -> Setup:
    """Set ``config.meta.heap`` of ``model`` (as dbt writes it, in both places) or change its options."""

    def change(doc: dict[str, Any]) -> None:
        n = node(doc, model)
        for where in (n["config"]["meta"], n["meta"]):
            if heap is not None:
                where["heap"] = heap
                continue
            block = where["heap"]
            for option in drop:
                del block[option]
            block.update(options)

    return edit_manifest(change)


def edit_node(model: str, **values: Any) -> Setup:
    def change(doc: dict[str, Any]) -> None:
        n = node(doc, model)
        config = values.pop("config", {})
        n.update(values)
        n["config"].update(config)

    return edit_manifest(change)


def edit_file(name: str, change: Callable[[str], str]) -> Setup:
    def setup(project: Path, _: contextlib.ExitStack) -> None:
        path = project / name
        path.write_text(change(path.read_text()))

    return setup


def delete(name: str) -> Setup:
    def setup(project: Path, _: contextlib.ExitStack) -> None:
        (project / name).unlink()

    return setup


def truncate(name: str) -> Setup:
    def setup(project: Path, _: contextlib.ExitStack) -> None:
        path = project / name
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return setup


def warehouse_sql(statement: str) -> Setup:
    def setup(project: Path, _: contextlib.ExitStack) -> None:
        with duckdb.connect(str(project / "heap_demo.duckdb")) as con:
            con.execute(statement)

    return setup


def run_results(change: Callable[[dict[str, Any]], None]) -> Setup:
    def setup(project: Path, _: contextlib.ExitStack) -> None:
        path = project / "target" / "run_results.json"
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))

    return setup


def model_failed(*, invocation: str | None) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        if invocation is not None:
            doc["metadata"]["invocation_id"] = invocation
        for result in doc["results"]:
            if result["unique_id"] == "model.heap_demo.heap_users":
                result["status"] = "error"

    return change


def without_module(module: str) -> Setup:
    """Shadow ``module`` (on PYTHONPATH={project}/shadow) with one whose import fails, as when
    the extra that installs it is missing."""

    def setup(project: Path, _: contextlib.ExitStack) -> None:
        folder = project / "shadow" / Path(*module.split("."))
        folder.mkdir(parents=True)
        for parent in list(folder.relative_to(project / "shadow").parents)[:-1]:
            (project / "shadow" / parent / "__init__.py").write_text("")
        (folder / "__init__.py").write_text(
            f"raise ModuleNotFoundError({'No module named ' + repr(module)!r}, name={module!r})\n"
        )

    return setup


HOLD_LOCK = (
    "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); sys.stdin.read()"
)


def lock_warehouse(project: Path, stack: contextlib.ExitStack) -> None:
    """Another process (a `dbt run`, say) holds DuckDB's write lock on the warehouse file."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(project / "heap_demo.duckdb")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def release() -> None:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()

    stack.callback(release)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"


# --- the catalogue ---------------------------------------------------------------------------------

PROFILE_PATH = "{{ env_var('HEAP_DEMO_DUCKDB_PATH', 'heap_demo.duckdb') }}"
MANIFEST = "{project}/target/manifest.json"
SCHEMA_V99 = "https://schemas.getdbt.com/dbt/manifest/v99.json"
WAREHOUSE = "{project}/heap_demo.duckdb"


SYNCS_DECLARED = "The models that declare a Heap sync: heap_accounts, heap_purchases, heap_users."
MISPLACED = (
    "heap-dbt does not read a heap block here, so this model syncs nothing; move the block to "
    "`config.meta.heap`"
)


def case(id: str, *says: str, setup: Setup | tuple[Setup, ...] = (), **options: Any) -> Case:
    """One entry of the catalogue: its id, the fragments its message holds, how to provoke it."""
    return Case(id, says, setup=setup if isinstance(setup, tuple) else (setup,), **options)


CASES: list[Case] = [
    # dbt's artifacts
    case(
        "manifest-missing",
        f"No dbt manifest at {MANIFEST}.",
        "Run `dbt run` (or `dbt build`)",
        setup=delete("target/manifest.json"),
    ),
    case(
        "manifest-truncated",
        f"The dbt manifest at {MANIFEST} is not a valid manifest.json",
        "Re-run `dbt run` to write a fresh one.",
        setup=truncate("target/manifest.json"),
    ),
    case(
        "manifest-schema-version-unsupported",
        f"The dbt manifest at {MANIFEST} has schema version v99",
        "Use dbt 1.6 to 1.12, or dbt Fusion (dbt Core 2.0) that writes manifest v12.",
        setup=edit_manifest(lambda d: d["metadata"].update(dbt_schema_version=SCHEMA_V99)),
    ),
    case(
        "project-dir-without-a-manifest",
        "No dbt manifest at {project}/nope/target/manifest.json",
        "point --project-dir/--target-path",
        args=("--project-dir", "{project}/nope"),
    ),
    case(
        "run-results-of-another-invocation",
        "Warning: {project}/target/run_results.json is from another dbt invocation than "
        f"{MANIFEST} (`dbt ls`, `compile` and `parse` rewrite the manifest)",
        "syncs the models that the run results report as built.",
        setup=run_results(model_failed(invocation="another-invocation")),
        args=("--dry-run",),
        exit_code=0,
    ),
    # profiles.yml and the warehouse
    case(
        "profiles-yml-missing",
        "No profiles.yml found (looked in",
        "pass --profiles-dir or set DBT_PROFILES_DIR.",
        setup=delete("profiles.yml"),
        env={"HOME": "{project}/home"},
    ),
    case(
        "profiles-yml-not-yaml",
        "Error: profiles.yml is not valid YAML",
        "Fix the file and retry.",
        setup=edit_file("profiles.yml", lambda t: t + "\n  outputs: [\n"),
    ),
    case(
        "profile-missing",
        "Profile 'nope' is not in profiles.yml; it has heap_demo.",
        env={"DBT_PROFILE": "nope"},
    ),
    case(
        "target-missing",
        "Target 'nope' is not in profile 'heap_demo'; it has dev, ci, postgres, snowflake. Pass --target.",
        args=("--target", "nope"),
    ),
    case(
        "env-var-missing",
        "profiles.yml needs the environment variable 'HEAP_DEMO_DUCKDB_PATH', which is not set;",
        "export it or give env_var() a default.",
        setup=edit_file(
            "profiles.yml", lambda t: t.replace(PROFILE_PATH, "{{ env_var('HEAP_DEMO_DUCKDB_PATH') }}")
        ),
    ),
    case(
        "warehouse-path-in-memory",
        "Target 'dev' uses DuckDB path ':memory:', which keeps nothing after dbt exits;",
        "point `path` at a file.",
        setup=edit_file("profiles.yml", lambda t: t.replace(PROFILE_PATH, ":memory:", 1)),
    ),
    case(
        "warehouse-file-missing",
        f"The DuckDB file {WAREHOUSE} does not exist; run `dbt run` first, or check the profile's `path`",
        setup=delete("heap_demo.duckdb"),
    ),
    case(
        "warehouse-file-locked",
        f"Cannot open DuckDB file {WAREHOUSE}: another process holds its lock",
        "Wait for it to finish, then run heap-dbt again.",
        setup=lock_warehouse,
    ),
    case(
        "warehouse-file-locked-dry-run",
        f"Cannot open DuckDB file {WAREHOUSE}: another process holds its lock",
        "Wait for it to finish",
        setup=lock_warehouse,
        args=("--dry-run",),
    ),
    case(
        "model-table-missing",
        'model heap_accounts, config.meta.heap: the table "heap_demo"."main"."heap_accounts" does not exist;',
        "run `dbt run` (or `dbt build`) for heap_accounts first.",
        setup=warehouse_sql('DROP TABLE "main"."heap_accounts"'),
    ),
    # a warehouse driver that is not installed (its heap-dbt extra is missing)
    case(
        "postgres-driver-missing",
        "Target 'postgres' is a postgres warehouse, and its driver is not installed "
        "(adbc_driver_postgresql cannot be imported).",
        'Install it beside heap-dbt with: pip install "heap-dbt[postgres]"',
        setup=without_module("adbc_driver_postgresql"),
        args=("--target", "postgres"),
        env={"PYTHONPATH": "{project}/shadow"},
    ),
    case(
        "snowflake-driver-missing",
        "Target 'snowflake' is a snowflake warehouse, and its driver is not installed",
        'pip install "heap-dbt[snowflake]"',
        setup=without_module("snowflake.connector"),
        args=("--target", "snowflake"),
        env={"PYTHONPATH": "{project}/shadow"},
    ),
    # flags and environment
    case(
        "base-url-plain-http",
        "HEAP_BASE_URL is http://heap.example.com, plain http to heap.example.com",
        "use https://, or a loopback host (127.0.0.1, ::1 or localhost)",
        args=("--dry-run",),
        env={"HEAP_BASE_URL": "http://heap.example.com"},
        to_emulator=False,
    ),
    case(
        "base-url-plain-http-checked-before-the-manifest",
        "HEAP_BASE_URL is http://heap.example.com:8080/, plain http",
        setup=delete("target/manifest.json"),
        args=("--dry-run",),
        env={"HEAP_BASE_URL": "http://heap.example.com:8080/"},
        to_emulator=False,
        not_says=("manifest",),
    ),
    case(
        "base-url-not-a-url",
        "HEAP_BASE_URL is not an http(s) URL; set it like https://heapanalytics.com",
        env={"HEAP_BASE_URL": "heapanalytics.com"},
        to_emulator=False,
    ),
    case(
        "base-url-with-a-password",
        "HEAP_BASE_URL (https://heap.example.com) holds a user name or password; remove them",
        env={"HEAP_BASE_URL": "https://me:hunter2@heap.example.com"},
        to_emulator=False,
        not_says=("hunter2",),
    ),
    case(
        "region-unknown",
        "Unknown --region 'mars'; use us or eu.",
        args=("--region", "mars"),
        to_emulator=False,
    ),
    case(
        "app-id-missing",
        "model heap_users, config.meta.heap: no Heap app_id; pass --app-id, set HEAP_APP_ID, "
        "or set app_id in the block.",
        app_id=False,
    ),
    case(
        "flag-out-of-range",
        "Invalid value for '--concurrency': 0 is not in the range 1<=x<=256.",
        args=("--concurrency", "0"),
    ),
    case(
        "selector-method-unknown",
        "Unknown selector method 'bogus' in 'bogus:x'; heap-dbt understands fqn, tag, path, file,",
        args=("-s", "bogus:x"),
    ),
    case(
        "selector-method-needs-state",
        "The selector method 'state' (in 'state:modified+') needs dbt's --state artifacts",
        args=("-s", "state:modified+"),
    ),
    case(
        "selector-not-in-the-manifest",
        "No selector named 'nightly' in the manifest",
        args=("--selector", "nightly"),
    ),
    case(
        "memory-limit-unreadable",
        "--memory-limit (or HEAP_DBT_MEMORY_LIMIT) 'lots' is not a memory size",
        "write it like 256MB or 1GB.",
        args=("--memory-limit", "lots"),
        not_says=(WAREHOUSE,),
    ),
    case(
        "memory-limit-in-the-environment-unreadable",
        "--memory-limit (or HEAP_DBT_MEMORY_LIMIT) '64' is not a memory size DuckDB reads",
        "write it like 256MB or 1GB.",
        env={"HEAP_DBT_MEMORY_LIMIT": "64"},
    ),
    # a selection that matches nothing: a typo, never a silent "nothing to sync"
    *(
        case(
            f"{flag.strip('-')}-matches-no-node-in-{command}",
            f"Nothing in the manifest at {MANIFEST} matches this criterion; check the spelling",
            f"{flag} 'customrs'",
            SYNCS_DECLARED,
            args=(*before, flag, "customrs"),
            command=command,
        )
        for command, before in (("sync", ()), ("ls", ()), ("exposures", ()), ("run", ("run",)))
        for flag in ("--select", "--exclude")
        if not (command == "run" and flag == "--exclude")
    ),
    case(
        "select-criterion-in-a-word-matches-no-node",
        "--select 'tag:haep'",
        SYNCS_DECLARED,
        args=("-s", "heap_users tag:haep,path:models"),
        not_says=("'heap_users'", "'path:models'"),
    ),
    case(
        "selector-criterion-matches-no-node",
        "--selector nightly 'tag:nighly'",
        SYNCS_DECLARED,
        setup=edit_manifest(
            lambda d: d["selectors"].update(
                nightly={"name": "nightly", "definition": {"union": ["tag:heap", "tag:nighly"]}}
            )
        ),
        args=("--selector", "nightly"),
    ),
    case(
        "default-selector-criterion-matches-no-node",
        "the default selector nightly 'customrs'",
        setup=edit_manifest(
            lambda d: d["selectors"].update(
                nightly={"name": "nightly", "definition": "customrs", "default": True}
            )
        ),
    ),
    # a heap block where dbt keeps it but heap-dbt does not read it
    case(
        "heap-block-under-config",
        f"model stg_orders, config.heap: {MISPLACED}",
        setup=edit_node("stg_orders", config={"heap": {"object": "event", "key": "order_id"}}),
    ),
    case(
        "heap-block-with-another-case",
        f"model stg_orders, config.meta.Heap: {MISPLACED}",
        setup=edit_node("stg_orders", config={"meta": {"Heap": {"object": "user", "key": "email"}}}),
    ),
    case(
        "heap-block-in-a-column-meta",
        f"model stg_users, columns.email.meta.heap: {MISPLACED}",
        setup=edit_manifest(
            lambda d: node(d, "stg_users")["columns"]["email"]["meta"].update(heap={"object": "user"})
        ),
    ),
    case(
        "heap-block-beside-config-in-the-yaml",
        f"model heap_users, models/marts/schema.yml: models: heap_users: heap: {MISPLACED}",
        setup=edit_file(
            "models/marts/schema.yml",
            lambda t: t.replace(
                "  - name: heap_users\n", "  - name: heap_users\n    heap: {object: user}\n", 1
            ),
        ),
    ),
    # config.meta.heap, as the manifest alone tells
    case(
        "meta-not-a-mapping",
        "model heap_users, config.meta.heap: expected a mapping with at least `object` and `key`.",
        setup=meta("heap_users", "user"),
    ),
    case(
        "meta-list-with-a-bad-block",
        "model heap_users, config.meta.heap[1]: expected a mapping with at least `object` and `key`.",
        setup=meta("heap_users", [{"object": "user", "key": "email"}, "user"]),
    ),
    case(
        "object-missing",
        "model heap_users, config.meta.heap.object: missing; set it to user, account or event.",
        setup=meta("heap_users", drop=("object",)),
    ),
    case(
        "object-unknown",
        "model heap_accounts, config.meta.heap.object: unknown object 'acount'; use user, account or event.",
        setup=meta("heap_accounts", object="acount"),
    ),
    case(
        "option-unknown-did-you-mean",
        "model heap_users, config.meta.heap.propertes: unknown option (did you mean 'fields'?); allowed: ",
        setup=meta("heap_users", propertes={"plan": "plan"}),
    ),
    case(
        "option-of-events-on-a-user",
        "model heap_users, config.meta.heap.identity: unknown option (event options only apply to "
        "`object: event`)",
        setup=meta("heap_users", identity="email"),
    ),
    case(
        "key-missing",
        "model heap_users, config.meta.heap.key: missing; name the column that holds the Identity.",
        setup=meta("heap_users", drop=("key",)),
    ),
    case(
        "fields-not-a-mapping",
        "model heap_users, config.meta.heap.fields: expected a mapping of Heap property -> column name.",
        setup=meta("heap_users", fields="email"),
    ),
    case(
        "property-name-empty",
        "model heap_users, config.meta.heap.fields: a property name is empty.",
        setup=meta("heap_users", fields={"": "email"}),
    ),
    case(
        "property-name-reserved",
        "model heap_users, config.meta.heap.fields: property 'ID' is reserved by Heap (any casing of "
        "'id'); rename it in `fields`.",
        setup=meta("heap_users", fields={"ID": "plan"}),
    ),
    case(
        "property-name-too-long",
        "model heap_users, config.meta.heap.fields: property name 'pppp",
        "is 1100 characters; Heap accepts at most 1023.",
        setup=meta("heap_users", fields={"p" * 1100: "plan"}),
    ),
    case(
        "behavior-unsupported",
        "model heap_users, config.meta.heap.behavior: 'replace' is not supported for user; the only "
        "behavior is update_or_create (omit it).",
        setup=meta("heap_users", behavior="replace"),
    ),
    case(
        "app-id-in-meta-empty",
        "model heap_users, config.meta.heap.app_id: expected your Heap environment ID as a string.",
        setup=meta("heap_users", app_id=" "),
    ),
    case(
        "truncate-not-a-boolean",
        "model heap_users, config.meta.heap.truncate: expected true or false.",
        setup=meta("heap_users", truncate="yes"),
    ),
    case(
        "nulls-not-an-option",
        "model heap_users, config.meta.heap.nulls: 'drop' is not an option; use keep (the default: a NULL "
        "leaves Heap's value in place) or clear (a NULL is sent as an empty string).",
        setup=meta("heap_users", nulls="drop"),
    ),
    case(
        "event-option-not-a-string",
        "model heap_purchases, config.meta.heap.timestamp: expected a non-empty string.",
        setup=meta("heap_purchases", timestamp=5),
    ),
    case(
        "event-identity-missing",
        "model heap_purchases, config.meta.heap.identity: missing; events need the column that holds "
        "the user's identity.",
        setup=meta("heap_purchases", drop=("identity",)),
    ),
    case(
        "event-name-and-name-column",
        "model heap_purchases, config.meta.heap: set either event_name (a fixed name) or "
        "event_name_column, not both.",
        setup=meta("heap_purchases", event_name_column="product"),
    ),
    case(
        "event-name-missing",
        "model heap_purchases, config.meta.heap.event_name: missing; set event_name: <Name> or "
        "event_name_column: <column>.",
        setup=meta("heap_purchases", drop=("event_name",)),
    ),
    case(
        "event-name-too-long",
        "model heap_purchases, config.meta.heap.event_name: longer than Heap's 1024 characters.",
        setup=meta("heap_purchases", event_name="E" * 1100),
    ),
    case(
        "model-ephemeral",
        "model heap_users, config.meta.heap: the model is ephemeral and has no table to read; "
        "materialize it as a table or view.",
        setup=edit_node("heap_users", relation_name=None, config={"materialized": "ephemeral"}),
    ),
    case(
        "three-problems-at-once",
        "The Heap sync configuration has 3 problems; nothing was sent. Fix them and re-run:",
        "model heap_accounts, config.meta.heap.object: unknown object 'acount'",
        "model heap_purchases, config.meta.heap.key: column 'no_such_column' is not in",
        "model heap_users, config.meta.heap.fields: property 'ID' is reserved",
        setup=(
            meta("heap_accounts", object="acount"),
            meta("heap_purchases", key="no_such_column"),
            meta("heap_users", fields={"ID": "plan"}),
        ),
    ),
    # config.meta.heap against the model's columns
    case(
        "column-of-key-unknown",
        f"model heap_users, config.meta.heap.key: column 'no_such_column' is not in {USERS}; "
        "its columns are email, user_id, account_id,",
        setup=meta("heap_users", key="no_such_column"),
    ),
    case(
        "column-of-field-unknown",
        f"model heap_users, config.meta.heap.fields.plan: column 'plann' is not in {USERS}; its columns are",
        setup=meta("heap_users", fields={"email": "email", "plan": "plann"}),
    ),
    case(
        "column-reserved-as-a-property",
        "model heap_accounts, config.meta.heap (column 'ID', no `fields` given): property 'ID' is "
        "reserved by Heap (any casing of 'id'); rename it in `fields`.",
        setup=warehouse_sql('ALTER TABLE "main"."heap_accounts" ADD COLUMN "ID" INTEGER'),
    ),
    case(
        "column-of-timestamp-not-a-timestamp",
        "model heap_purchases, config.meta.heap.timestamp: column 'product' is VARCHAR; cast it to a "
        "TIMESTAMP in the model.",
        setup=meta("heap_purchases", timestamp="product"),
    ),
    case(
        "column-of-key-tries-sql-injection",
        f"model heap_users, config.meta.heap.key: column {INJECTION!r} is not in {USERS}",
        setup=meta("heap_users", key=INJECTION),
        tables_untouched=True,
    ),
    case(
        "column-of-field-tries-sql-injection",
        f"model heap_users, config.meta.heap.fields.plan: column {INJECTION!r} is not in {USERS}",
        setup=meta("heap_users", fields={"email": "email", "plan": INJECTION}),
        tables_untouched=True,
    ),
]


def table_rows(project: Path) -> dict[str, int]:
    """Rows per table of the warehouse, read-only."""
    with duckdb.connect(str(project / "heap_demo.duckdb"), read_only=True) as con:
        tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
        names = [t[0] for t in tables]
        return {n: con.execute(f'SELECT count(*) FROM "main"."{n}"').fetchall()[0][0] for n in names}


def test_every_case_has_its_own_id() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error_and_nothing_is_sent(
    case: Case, project: Path, emulator: RunningEmulator
) -> None:
    def fill(text: str) -> str:
        return text.replace("{project}", str(project))

    with contextlib.ExitStack() as stack:
        for step in case.setup:
            step(project, stack)
        before = table_rows(project) if case.tables_untouched else None
        env = {k: fill(v) for k, v in case.env.items()}
        proc = heap_dbt(
            project,
            case.command,
            *(fill(a) for a in case.args),
            base_url=emulator.url if case.to_emulator else None,
            app_id=None if not case.app_id else "1234567890",
            **env,
        )

    assert proc.returncode == case.exit_code, proc.stderr
    message = " ".join(proc.stderr.split())  # typer and rich may wrap long lines
    for fragment in case.says:
        assert " ".join(fill(fragment).split()) in message
    for fragment in case.not_says:
        assert fill(fragment) not in message
    assert "Traceback" not in proc.stderr
    assert "a bug in heap-dbt" not in proc.stderr  # a user's mistake is not heap-dbt's bug
    assert emulator.emulator.snapshot()["requests"] == {}
    if case.exit_code == 2:
        assert proc.stdout == ""
    if before is not None:
        assert table_rows(project) == before and before["heap_users"] == 36


def test_a_property_name_that_looks_like_sql_is_sent_as_a_name(
    project: Path, emulator: RunningEmulator
) -> None:
    """Valid input, not an error: the name is quoted, so Heap gets it literally and the table stays."""
    name = 'plan\'); drop table "main"."heap_users"; --'
    for step in (meta("heap_users", fields={name: "plan"}),):
        step(project, contextlib.ExitStack())
    before = table_rows(project)

    proc = heap_dbt(project, "sync", "-s", "heap_users", base_url=emulator.url, app_id="1234567890")

    assert proc.returncode == 0, proc.stderr
    users = emulator.emulator.snapshot()["users"]["1234567890"]
    assert len(users) == 36 and {p for props in users.values() for p in props} == {name}
    assert table_rows(project) == before


# --- one cause, one sentence ----------------------------------------------------------------------


def failure_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("    failed")]


def test_heap_unreachable_is_one_line_per_sync_with_its_count_and_the_url_as_given(project: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"

    proc = heap_dbt(project, "sync", "--max-attempts", "1", base_url=url, app_id="1234567890")

    assert proc.returncode == 1, proc.stderr
    lines = failure_lines(proc.stdout)
    cause = re.escape(f"cannot connect to {url}: Connection refused (gave up after 1 attempts)")
    assert len(lines) == 3, proc.stdout  # one per sync, not one per row
    for line, rows in zip(lines, (36, 12, 40), strict=True):
        assert re.fullmatch(
            rf"    failed {rows} rows \(keys '[^']+', '[^']+', '[^']+' and {rows - 3} more\): {cause}", line
        )
    assert "ssl:default" not in proc.stdout + proc.stderr
    assert "Total: read 88, sent 0, unchanged 0, rejected 0, failed 88" in proc.stdout


def test_a_refused_app_id_is_one_line_per_cause(project: Path, emulator: RunningEmulator) -> None:
    """Heap refuses the first request (401): that batch fails with Heap's answer, and every other
    row is not sent, for that one reason."""
    emulator.emulator.configure(script=[401])

    proc = heap_dbt(project, "sync", "-s", "heap_users heap_accounts", base_url=emulator.url)

    assert proc.returncode == 1, proc.stderr
    lines = failure_lines(proc.stdout)
    assert len(lines) == 2, proc.stdout
    assert re.fullmatch(r"    failed 36 rows \(keys .+ and 33 more\): HTTP 401: scripted 401", lines[0])
    assert re.fullmatch(
        r"    failed 12 rows \(keys .+ and 9 more\): "
        r"not sent: Heap refused a request with HTTP 401: scripted 401",
        lines[1],
    )
