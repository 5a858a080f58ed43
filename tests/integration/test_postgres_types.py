"""PostgreSQL's own types arrive at Heap by the documented rules, or are a configuration error
that names the column; and a profile field heap-dbt does not support is named, not ignored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_dbt.emulator import RunningEmulator
from tests.conftest import APP_ID, dbt, heap_dbt
from tests.warehouses import Postgres, postgres_or_skip

pytestmark = pytest.mark.integration

TYPES_SQL = """
select 'a@example.com' as email,
       cast('2d3c2f5e-3b1a-4c6e-9f00-1a2b3c4d5e6f' as uuid) as uid,
       cast('ab' as char(4)) as code,
       cast('text' as varchar(10)) as label,
       cast(12.50 as numeric) as loose,
       cast(12345678901234567.5 as numeric) as huge,
       cast(3.25 as numeric(6, 2)) as fixed,
       array[1, 2, 3] as ints,
       array[cast(1.5 as numeric), 2] as nums,
       cast('{"plan": {"tier": "pro", "seats": 5}, "beta": true, "note": null}' as jsonb) as doc,
       cast('7' as json) as scalar,
       cast('2026-03-01 12:34:56.789+02' as timestamptz) as seen_at
union all
select 'b@example.com', null, null, null, null, null, null, null, null, null, null,
       cast('infinity' as timestamptz)
"""
# numeric(p, s) holds NaN (not +-Infinity); unconstrained numeric holds all three.
NAN_SQL = """
select 'ok@example.com' as email, cast(3.25 as numeric(6, 2)) as fixed, cast(1e20 as numeric) as loose,
       array[cast(1.5 as numeric), 2] as nums
union all select 'nan@example.com', cast('NaN' as numeric(6, 2)), null, null
union all select 'inf@example.com', null, cast('Infinity' as numeric), null
union all select 'minus-inf@example.com', null, cast('-Infinity' as numeric), null
union all select 'loose-nan@example.com', null, cast('NaN' as numeric), null
union all select 'nan-in-list@example.com', null, null, array[cast(1 as numeric), cast('NaN' as numeric)]
"""
BAD_SQL = "select 'a@example.com' as email, cast('\\\\x00' as bytea) as blob, interval '1 day' as span"
SCHEMA = """
version: 2
models:
  - name: pg_types
    config:
      meta:
        heap: {object: user, key: email}
  - name: pg_nan
    config:
      meta:
        heap: {object: user, key: email}
  - name: pg_bad
    config:
      meta:
        heap: {object: user, key: email}
"""


@pytest.fixture(scope="module")
def pg_project(wh_built_sample_pg: Path, tmp_path_factory: pytest.TempPathFactory, pg: Postgres) -> Path:
    project = pg.copy(wh_built_sample_pg, tmp_path_factory.mktemp("pgtypes") / "heap_demo")
    models = project / "models" / "pg"
    models.mkdir()
    (models / "pg_types.sql").write_text(TYPES_SQL)
    (models / "pg_bad.sql").write_text(BAD_SQL)
    (models / "pg_nan.sql").write_text(NAN_SQL)
    (models / "schema.yml").write_text(SCHEMA)
    dbt(project, "run", "-s", "pg_types pg_bad pg_nan", "--quiet")
    return project


@pytest.fixture(scope="module")
def pg() -> Any:
    wh = postgres_or_skip()
    yield wh
    wh.close()


@pytest.fixture(scope="module")
def wh_built_sample_pg(pg: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    from tests.conftest import SAMPLE

    project = tmp_path_factory.mktemp("sample-pg") / "heap_demo"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    pg.setup(project)
    dbt(project, "build", "--quiet")
    return project


def test_postgres_types_arrive_by_the_conversion_rules(pg_project: Path, emulator: RunningEmulator) -> None:
    proc = heap_dbt(pg_project, "sync", "-s", "pg_types", base_url=emulator.url)

    assert proc.returncode == 1, proc.stdout + proc.stderr  # b@example.com is rejected
    report = json.loads((pg_project / "target" / "heap_sync_results.json").read_text())
    assert [(r["key"], r["reason"]) for r in report["syncs"][0]["rejections"]] == [
        ("b@example.com", "property 'seen_at' is an infinite date")
    ]
    assert emulator.emulator.snapshot()["users"][APP_ID]["a@example.com"] == {
        "uid": "2d3c2f5e-3b1a-4c6e-9f00-1a2b3c4d5e6f",
        "code": "ab",  # char(n) without its padding
        "label": "text",
        "loose": 12.5,
        "huge": "12345678901234567.5",  # more digits than a double keeps: its exact digits
        "fixed": 3.25,
        "ints": "1||2||3",
        "nums": "1.5||2",
        "doc.plan.tier": "pro",
        "doc.plan.seats": 5,
        "doc.beta": "true",
        "scalar": 7,
        "seen_at": "2026-03-01T10:34:56.789Z",
    }


def test_nan_and_infinity_in_a_numeric_are_rejected_per_row_as_a_doubles_are(
    pg_project: Path, emulator: RunningEmulator
) -> None:
    proc = heap_dbt(pg_project, "sync", "-s", "pg_nan", base_url=emulator.url)

    assert proc.returncode == 1, proc.stdout + proc.stderr  # rows rejected, the sync done
    report = json.loads((pg_project / "target" / "heap_sync_results.json").read_text())
    (sync,) = report["syncs"]
    assert {r["key"]: r["reason"] for r in sync["rejections"]} == {
        "nan@example.com": "property 'fixed' is NaN or infinite",
        "inf@example.com": "property 'loose' is NaN or infinite",
        "minus-inf@example.com": "property 'loose' is NaN or infinite",
        "loose-nan@example.com": "property 'loose' is NaN or infinite",
        "nan-in-list@example.com": "property 'nums' holds NaN or infinite",
    }
    assert (sync["read"], sync["sent"], sync["rejected"], sync["failed"]) == (6, 1, 5, 0)
    assert emulator.emulator.snapshot()["users"][APP_ID] == {
        "ok@example.com": {"fixed": 3.25, "loose": "100000000000000000000", "nums": "1.5||2"}
    }


def test_a_type_heap_dbt_cannot_convert_names_the_column(pg_project: Path, emulator: RunningEmulator) -> None:
    proc = heap_dbt(pg_project, "sync", "-s", "pg_bad", base_url=emulator.url)

    assert proc.returncode == 2
    assert "column 'blob' is bytea" in proc.stderr and "cast it in the model" in proc.stderr
    assert "column 'span' is interval" in proc.stderr
    assert emulator.emulator.snapshot()["requests"] == {}


def test_an_unsupported_profile_field_is_named(pg_project: Path, emulator: RunningEmulator) -> None:
    profiles = pg_project / "profiles.yml"
    original = profiles.read_text()
    profiles.write_text(
        original.replace("      schema: public\n", "      schema: public\n      sslcrl: x\n", 1)
    )
    try:
        proc = heap_dbt(pg_project, "sync", "-s", "pg_types", base_url=emulator.url)
    finally:
        profiles.write_text(original)

    assert proc.returncode == 2
    assert "sslcrl" in proc.stderr and "Traceback" not in proc.stderr
    assert json.dumps(emulator.emulator.snapshot()["requests"]) == "{}"
