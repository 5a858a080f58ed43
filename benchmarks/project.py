"""Write the benchmark's dbt project (users, accounts, events over ``range(N)``) and build it with dbt.

Every value is a function of the row number, so a build is deterministic, every key is
unique and every row passes heap-dbt's checks: the sink must receive exactly N records.
The ``changed_pct`` var changes the users' ``plan`` for rows with ``i % 100 < changed_pct``,
so that an incremental sync has an exact, known set of changed rows to send.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

OBJECTS = ("user", "account", "event")  # what `make bench` runs
WIDE = "wide"  # a user model of 151 columns, for memory per column (`make bench-wide`)
MODELS = {"user": "bench_users", "account": "bench_accounts", "event": "bench_events", WIDE: "bench_wide"}
HEAP_OBJECT = {"user": "user", "account": "account", "event": "event", WIDE: "user"}
DATABASE_FILE = "bench.duckdb"  # its stem is the catalog name in the manifest's relation names

_DBT_PROJECT = """\
name: heap_bench
version: "1.0.0"
config-version: 2
profile: heap_bench
model-paths: ["models"]
target-path: "target"
vars:
  rows: 10000
  changed_pct: 0
  wide_pairs: 75
models:
  heap_bench:
    +materialized: table
"""

_PROFILES = """\
heap_bench:
  target: bench
  outputs:
    bench:
      type: duckdb
      path: {path}
      threads: 3
"""

# Users: strings, DECIMAL, DOUBLE, INTEGER, BOOLEAN, TIMESTAMP with NULLs, VARCHAR[] (NULL and empty).
_USERS_SQL = """\
select
    'user' || lpad(cast(i as varchar), 9, '0') || '@example.com' as email,
    i as user_id,
    (['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Margaret', 'Ken', 'Radia', 'Linus'])[1 + i % 10]
        || ' ' || (['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Hamilton',
                    'Thompson', 'Perlman', 'Torvalds'])[1 + (i // 10) % 10] as full_name,
    case when i % 100 < {{ var('changed_pct') }} then 'changed'
         else (['free', 'starter', 'pro', 'enterprise'])[1 + (i * 7) % 4] end as plan,
    'acct-' || lpad(cast(i // 10 as varchar), 8, '0') as account_id,
    cast(((i * 37) % 1000000) / 100 as decimal(12, 2)) as lifetime_value,
    cast(((i * 2654435761) % 100000) / 1000 as double) as engagement_score,
    cast((i * 13) % 500 as integer) as sessions_30d,
    i % 3 <> 0 as is_activated,
    case when i % 5 = 0 then null
         else timestamp '2024-01-01 00:00:00' + to_seconds(cast((i * 7919) % 31536000 as bigint)) end
        as last_seen_at,
    case when i % 4 = 0 then null
         else list_slice(['beta', 'dark_mode', 'sso', 'exports', 'ai_assist'], 1, i % 5) end as feature_flags
from range({{ var('rows') }}) as t(i)
"""

# Accounts: no `fields`, so every column but the key is a property.
_ACCOUNTS_SQL = """\
select
    'acct-' || lpad(cast(i as varchar), 8, '0') as account_id,
    (['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli', 'Stark', 'Wayne', 'Wonka'])[1 + i % 8]
        || ' ' || (['Labs', 'Corp', 'Inc', 'GmbH', 'Ltd'])[1 + (i // 8) % 5] || ' #' || cast(i as varchar)
        as account_name,
    (['free', 'starter', 'pro', 'enterprise'])[1 + i % 4] as plan,
    cast(1 + (i * 7) % 250 as integer) as seats,
    cast(((i * 7919) % 5000000) / 100 as decimal(12, 2)) as mrr_usd,
    cast(((i * 48271) % 1000) / 1000 as double) as health_score,
    i % 4 <> 0 as is_paying,
    case when i % 6 = 0 then null
         else (['saas', 'retail', 'fintech', 'health', 'media'])[1 + i % 5] end as industry,
    timestamp '2020-01-01 00:00:00' + to_seconds(cast((i * 104729) % 157680000 as bigint)) as created_at,
    list_slice(['us-east', 'eu-west', 'ap-south'], 1, 1 + i % 3) as regions
from range({{ var('rows') }}) as t(i)
"""

# Events: identity from the users' emails (four events per user), a fixed name, a timestamp column.
_EVENTS_SQL = """\
select
    'evt-' || lpad(cast(i as varchar), 10, '0') as event_id,
    'user' || lpad(cast((i * 7) % greatest({{ var('rows') }} // 4, 1) as varchar), 9, '0')
        || '@example.com' as user_email,
    timestamp '2025-06-01 00:00:00' - to_seconds(cast((i * 31) % 31536000 as bigint)) as occurred_at,
    (['Starter kit', 'Pro upgrade', 'Seat pack', 'Add-on: SSO', 'Support plan'])[1 + i % 5] as product,
    cast(1 + i % 9 as integer) as quantity,
    cast(((i * 7919) % 100000) / 100 as decimal(10, 2)) as amount_usd,
    case when i % 7 = 0 then null else cast((i % 30) / 100 as double) end as discount,
    (['USD', 'EUR', 'GBP'])[1 + i % 3] as currency,
    case when i % 10 = 0 then 'SPRING' || cast(i % 100 as varchar) end as coupon,
    i % 4 = 0 as is_first_purchase,
    list_slice(['web', 'mobile', 'promo', 'renewal'], 1, 1 + i % 4) as tags
from range({{ var('rows') }}) as t(i)
"""

# Wide users: every column a property, half strings (a seventh NULL), half integers.
_WIDE_SQL = """\
select
    'user' || lpad(cast(i as varchar), 9, '0') || '@example.com' as email
{%- for j in range(var('wide_pairs')) %},
    case when i % 7 = {{ j % 7 }} then null else 'value ' || cast((i * {{ j + 1 }}) % 100003 as varchar) end
        as s{{ j }},
    (i * {{ j + 3 }}) % 1000003 as n{{ j }}
{%- endfor %}
from range({{ var('rows') }}) as t(i)
"""

_SCHEMA_YML = """\
version: 2
models:
  - name: bench_users
    config:
      meta:
        heap:
          object: user
          key: email
          fields:
            name: full_name
            plan: plan
            lifetime_value: lifetime_value
            engagement_score: engagement_score
            sessions_30d: sessions_30d
            is_activated: is_activated
            last_seen_at: last_seen_at
            feature_flags: feature_flags
  - name: bench_accounts
    config:
      meta:
        heap:
          object: account
          key: account_id
  - name: bench_events
    config:
      meta:
        heap:
          object: event
          key: event_id
          identity: user_email
          event_name: Purchase
          timestamp: occurred_at
          fields: [product, quantity, amount_usd, discount, currency, coupon, is_first_purchase, tags]
  - name: bench_wide
    config:
      meta:
        heap:
          object: user
          key: email
"""


class ProjectBuildError(RuntimeError):
    """``dbt run`` failed; the message carries the end of its log."""


@dataclass(frozen=True)
class BenchProject:
    """A generated dbt project: its directory (also the profiles dir) and its DuckDB file."""

    root: Path
    database: Path

    @staticmethod
    def model(obj: str) -> str:
        return MODELS[obj]


def write_project(root: Path) -> BenchProject:
    """Write the dbt project into ``root`` (created if needed) and return it."""
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    database = (root / DATABASE_FILE).resolve()
    (root / "dbt_project.yml").write_text(_DBT_PROJECT)
    (root / "profiles.yml").write_text(_PROFILES.format(path=json.dumps(str(database))))
    (models / "bench_users.sql").write_text(_USERS_SQL)
    (models / "bench_accounts.sql").write_text(_ACCOUNTS_SQL)
    (models / "bench_events.sql").write_text(_EVENTS_SQL)
    (models / "bench_wide.sql").write_text(_WIDE_SQL)
    (models / "schema.yml").write_text(_SCHEMA_YML)
    return BenchProject(root=root.resolve(), database=database)


def dbt_command() -> list[str]:
    """dbt next to this interpreter (the venv's), else the one on PATH."""
    local = Path(sys.executable).parent / "dbt"
    if local.exists():
        return [str(local)]
    found = shutil.which("dbt")
    if found is None:
        raise ProjectBuildError("dbt is not installed; `pip install -e '.[dev]'` into the venv.")
    return [found]


def changed_rows(rows: int, changed_pct: int) -> int:
    """How many of ``range(rows)`` the ``changed_pct`` var changes: those with ``i % 100 < changed_pct``."""
    pct = max(0, min(changed_pct, 100))
    return rows // 100 * pct + min(rows % 100, pct)


def build(project: BenchProject, *, rows: int, objects: Sequence[str], changed_pct: int = 0) -> float:
    """``dbt run`` the models of ``objects`` with ``rows`` rows each; returns its (untimed) seconds."""
    cmd = [
        *dbt_command(), "run",
        "--project-dir", str(project.root), "--profiles-dir", str(project.root),
        "--vars", json.dumps({"rows": rows, "changed_pct": changed_pct}),
        "--select", *(MODELS[o] for o in objects),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=project.root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise ProjectBuildError(f"`dbt run` failed for {rows:,} rows (exit {done.returncode}):\n{tail}")
    return time.perf_counter() - started
