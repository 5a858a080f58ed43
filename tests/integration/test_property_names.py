"""Every property name is unique in a record: the catalogue of collisions, on every warehouse.

A collision that the columns show (a struct's or a map's flattened names against a column, a
property mapped onto a struct's field, two JSON columns whose names can meet) is a
configuration error naming both sources, and nothing is sent. A collision that only a row's
JSON value shows rejects that row with a reason naming both sources; the rest syncs. Columns
whose names differ only in case each send their own value. Each case gives, per warehouse, the
model's SQL and what must happen, or why that warehouse cannot hold the case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from heap_dbt.emulator import run_in_thread
from tests.conftest import APP_ID, dbt, heap_dbt
from tests.warehouses import Warehouse

pytestmark = pytest.mark.integration

RENAME = "; rename one of the columns in the model, or map it to another property name in `fields`."
NO_CASE = "DuckDB identifiers are case-insensitive: a table cannot hold `plan` and `Plan` side by side"
NO_MAP = {
    "postgres": "Postgres has no map type",
    "snowflake": "heap-dbt refuses Snowflake's structured MAP (cast it in the model), so no map is flattened",
}


@dataclass(frozen=True)
class Outcome:
    sql: str
    """The model's SQL in this warehouse."""
    error: str | None = None
    """The configuration problem heap-dbt must report (exit 2, nothing sent)."""
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Identity -> the properties Heap must hold."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Key -> the exact rejection reason."""


@dataclass(frozen=True)
class Case:
    id: str
    block: dict[str, Any]
    outcomes: dict[str, Outcome]
    cannot: dict[str, str] = field(default_factory=dict)
    """Warehouse -> why it cannot hold this case."""

    @property
    def model(self) -> str:
        return "names_" + self.id.replace("-", "_")


def sf_json(value: str) -> str:
    return f"PARSE_JSON('{value}')"


def pg_json(value: str) -> str:
    return f"CAST('{value}' AS json)"


USER = {"object": "user", "key": "id"}
DOTTED = '{"a.b": 1, "a": {"b": 2}}'
REPEATED = '{"a": 1, "a": 2}'
NESTED = '{"a": {"c": 3}}'
ADDRESS_ROWS = {  # a JSON address per user: u1's city meets the column, u2's zip does not
    "postgres": (pg_json('{"city": "Paris"}'), pg_json('{"zip": "75001"}')),
    "snowflake": (sf_json('{"city": "Paris"}'), sf_json('{"zip": "75001"}')),
}


def address_sql(wh: str, other: str) -> str:
    first, second = ADDRESS_ROWS[wh]
    return (
        f"SELECT 'u1' AS id, {first} AS address, 'Lyon' AS {other}\nUNION ALL SELECT 'u2', {second}, 'Lyon'\n"
    )


def json_both(other: str) -> str:
    return f"""property "address.city" comes from both column 'address' (JSON, flattened) and {other}"""


CASES = [
    Case(
        "struct-vs-column",
        USER,
        {
            "duckdb": Outcome(
                """SELECT 'u1' AS id, {'city': 'Paris'} AS address, 'Lyon' AS "address.city"\n""",
                error="model names_struct_vs_column, config.meta.heap: property 'address.city' would come "
                "from both column 'address' (a struct, flattened) and column 'address.city'" + RENAME,
            ),
            # Postgres and Snowflake keep nested data as JSON, whose keys are known per row only.
            **{
                wh: Outcome(
                    address_sql(wh, '"address.city"'),
                    sent={"u2": {"address.zip": "75001", "address.city": "Lyon"}},
                    rejected={"u1": json_both("column 'address.city'")},
                )
                for wh in ("postgres", "snowflake")
            },
        },
    ),
    Case(
        "mapped-onto-struct-field",
        {**USER, "fields": {"address.city": "city", "address": "address"}},
        {
            "duckdb": Outcome(
                "SELECT 'u1' AS id, 'Lyon' AS city, {'city': 'Paris'} AS address\n",
                error="model names_mapped_onto_struct_field, config.meta.heap: property 'address.city' "
                "would come from both column 'city' (as 'address.city') and column 'address' (a struct, "
                "flattened)" + RENAME,
            ),
            **{
                wh: Outcome(
                    address_sql(wh, "city"),
                    sent={"u2": {"address.zip": "75001", "address.city": "Lyon"}},
                    rejected={"u1": json_both("column 'city' (as 'address.city')")},
                )
                for wh in ("postgres", "snowflake")
            },
        },
    ),
    Case(
        "map-vs-column",
        USER,
        {
            "duckdb": Outcome(
                """SELECT 'u1' AS id, MAP {'color': 'red'} AS attributes, 'blue' AS "attributes.color"\n""",
                error="model names_map_vs_column, config.meta.heap: property 'attributes.color' would come "
                "from both column 'attributes' (a map, flattened) and column 'attributes.color'" + RENAME,
            ),
        },
        cannot=NO_MAP,
    ),
    Case(
        "json-vs-json",
        USER,
        {
            wh: Outcome(
                f"""SELECT 'u1' AS id, {js('{"x": 1}')} AS payload, {js('{"y": 2}')} AS "payload.extra"\n""",
                error="model names_json_vs_json, config.meta.heap: property 'payload.extra.<key>' would come "
                "from both column 'payload' (JSON, flattened) and column 'payload.extra' (JSON, "
                "flattened)" + RENAME,
            )
            for wh, js in (("duckdb", pg_json), ("postgres", pg_json), ("snowflake", sf_json))
        },
    ),
    Case(
        "json-leaves-meet",
        USER,
        {
            # DuckDB's JSON, like Postgres' json, keeps a repeated key as written (jsonb keeps the last).
            wh: Outcome(
                f"SELECT 'u1' AS id, {pg_json(DOTTED)} AS payload\n"
                f"UNION ALL SELECT 'u2', {pg_json(REPEATED)}\n"
                f"UNION ALL SELECT 'u3', {pg_json(NESTED)}\n",
                sent={"u3": {"payload.a.c": 3}},
                rejected={
                    "u1": """property "payload.a.b" comes twice from column 'payload' (JSON, flattened), """
                    """at $."a.b" and $.a.b""",
                    "u2": """property "payload.a" comes twice from column 'payload' (JSON, flattened), """
                    "at $.a and $.a",
                },
            )
            for wh in ("duckdb", "postgres")
        }
        | {
            "snowflake": Outcome(
                # Snowflake's PARSE_JSON refuses a repeated key, so only the dotted key stands in.
                f"SELECT 'u1' AS id, {sf_json(DOTTED)} AS payload\n"
                f"UNION ALL SELECT 'u3', {sf_json(NESTED)}\n",
                sent={"u3": {"payload.a.c": 3}},
                rejected={
                    "u1": """property "payload.a.b" comes twice from column 'payload' (JSON, flattened), """
                    """at $."a.b" and $.a.b""",
                },
            ),
        },
    ),
    Case(
        "names-differ-in-case",
        USER,
        {
            "postgres": Outcome(
                """SELECT 'u1' AS id, 'basic' AS plan, 'Pro' AS "Plan"\n""",
                sent={"u1": {"plan": "basic", "Plan": "Pro"}},
            ),
        },
        cannot={
            "duckdb": NO_CASE,
            # tests/unit/test_warehouse_snowflake.py checks the statements for PLAN beside "Plan".
            "snowflake": "fakesnow is DuckDB underneath, which renames the second of two names that "
            "differ only in case (it stores `Plan` as `Plan_1`)",
        },
    ),
]


def test_every_case_says_for_each_warehouse_what_happens_or_why_it_cannot_hold_it() -> None:
    for case in CASES:
        assert set(case.outcomes) | set(case.cannot) == {"duckdb", "postgres", "snowflake"}, case.id
        assert not set(case.outcomes) & set(case.cannot), case.id
        assert all(case.cannot.values()), case.id


@pytest.fixture(scope="module")
def names_project(
    warehouse: Warehouse, wh_built_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The cases this warehouse holds, as models built by one dbt run."""
    project = warehouse.copy(wh_built_sample, tmp_path_factory.mktemp("names") / "heap_demo")
    models = project / "models" / "names"
    models.mkdir()
    held = [c for c in CASES if warehouse.name in c.outcomes]
    for case in held:
        (models / f"{case.model}.sql").write_text(case.outcomes[warehouse.name].sql, encoding="utf-8")
    schema = {
        "version": 2,
        "models": [{"name": c.model, "config": {"meta": {"heap": c.block}}} for c in held],
    }
    (models / "schema.yml").write_text(yaml.safe_dump(schema, sort_keys=False))
    dbt(project, "run", "-s", *(c.model for c in held), "--quiet")
    return project


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_property_names_are_unique_in_every_record(
    case: Case, warehouse: Warehouse, names_project: Path
) -> None:
    if warehouse.name in case.cannot:
        pytest.skip(case.cannot[warehouse.name])
    want = case.outcomes[warehouse.name]

    with run_in_thread() as running:
        proc = heap_dbt(names_project, "sync", "-s", case.model, base_url=running.url)
        state = running.emulator.snapshot()

    if want.error is not None:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"  - {want.error}\n" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert state["request_log"] == []
        return
    assert proc.returncode == (1 if want.rejected else 0), proc.stdout + proc.stderr
    assert state["users"].get(APP_ID, {}) == want.sent
    assert all(entry["status"] == 200 for entry in state["request_log"])
    report = json.loads((names_project / "target" / "heap_sync_results.json").read_text())
    (sync,) = report["syncs"]
    assert {r["key"]: r["reason"] for r in sync["rejections"]} == want.rejected
    assert (sync["read"], sync["sent"], sync["rejected"]) == (
        len(want.sent) + len(want.rejected),
        len(want.sent),
        len(want.rejected),
    )
