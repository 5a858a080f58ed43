"""The DuckDB reader on real DuckDB files: memory sizing, wide models, errors mid-stream, file modes."""

from __future__ import annotations

import stat
from pathlib import Path

import duckdb
import pytest

from heap_dbt.errors import WarehouseError
from heap_dbt.warehouse.duckdb import DuckDBReader
from heap_dbt.warehouse.duckdb.memory import DEFAULT_SIZING, MB, size_bytes

DEFAULT_MEMORY_LIMIT = DEFAULT_SIZING.default_limit
PIPELINE_MEMORY_BASE = DEFAULT_SIZING.pipeline_base
SCAN_MEMORY_BASE = DEFAULT_SIZING.scan_base
SCAN_MEMORY_PER_COLUMN = DEFAULT_SIZING.scan_per_column


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "wh.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS i FROM range(100000)")
    return path


def settings(reader: DuckDBReader) -> tuple[int, int]:
    """DuckDB's current (threads, memory limit in bytes)."""
    threads = reader.fetch_one("SELECT current_setting('threads')")[0]
    limit = reader.fetch_one("SELECT current_setting('memory_limit')")[0]
    return int(threads), size_bytes(str(limit))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64MB", 64_000_000), ("61.0 MiB", 61 * MB), ("1.5 GiB", 1536 * MB), ("512 bytes", 512),
        ("100", 100), ("256mb", 256_000_000), (" 2 GB ", 2_000_000_000),
    ],
)  # fmt: skip
def test_size_bytes_reads_what_users_write_and_what_duckdb_prints(text: str, expected: int) -> None:
    assert size_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "64 parsecs", "", "MB"])
def test_size_bytes_refuses_nonsense_with_an_example(text: str) -> None:
    with pytest.raises(WarehouseError, match="like 256MB"):
        size_bytes(text)


def test_a_narrow_model_keeps_the_default_limit_and_every_thread(database: Path) -> None:
    reader = DuckDBReader(database, threads=2)
    try:
        reader.fit(10)
        assert settings(reader) == (2, pytest.approx(size_bytes(DEFAULT_MEMORY_LIMIT), rel=0.01))
    finally:
        reader.close()


def test_a_wide_model_gets_memory_for_its_scan_and_fewer_threads(database: Path) -> None:
    reader = DuckDBReader(database, threads=4)
    try:
        reader.fit(50)  # 4 threads x 50 MB fit the 256 MB budget
        threads, limit = settings(reader)
        assert threads == 4
        assert limit >= SCAN_MEMORY_BASE + 4 * 50 * SCAN_MEMORY_PER_COLUMN - MB
        reader.fit(150)  # only one thread fits the budget: memory for that one
        threads, limit = settings(reader)
        assert threads == 1
        assert limit >= SCAN_MEMORY_BASE + 150 * SCAN_MEMORY_PER_COLUMN - MB
        reader.fit(10)  # the next, narrow sync gets every thread back
        assert settings(reader)[0] == 4
    finally:
        reader.close()


def cached_table_bytes(reader: DuckDBReader) -> int:
    return int(
        reader.fetch_one(
            "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = 'BASE_TABLE'"
        )[0]
    )


def test_a_pipeline_gets_its_scan_and_the_cached_blocks_it_reads_again(tmp_path: Path) -> None:
    path = tmp_path / "big.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(300000)")
    reader = DuckDBReader(path, threads=2)
    try:
        reader.fit(2, pipeline=True)  # nothing cached yet: the scan's memory and the small base
        assert settings(reader) == (2, pytest.approx(PIPELINE_MEMORY_BASE + 2 * 2 * MB, abs=MB))
        reader.fit(2)
        reader.fetch_one("SELECT count(*), sum(hash(i, s)) FROM t")  # caches the table's blocks
        cached = cached_table_bytes(reader)
        assert cached > 4 * MB
        reader.fit(2, pipeline=True)  # keeps room for what is cached, which the stream reads again
        assert settings(reader)[1] == pytest.approx(PIPELINE_MEMORY_BASE + 2 * 2 * MB + cached, abs=MB)
        assert (
            sum(batch.num_rows for batch in reader.stream("SELECT i, s FROM t", batch_rows=10000)) == 300000
        )
    finally:
        reader.close()


def test_a_limit_the_user_chose_is_kept_and_threads_fit_inside_it(database: Path) -> None:
    reader = DuckDBReader(database, threads=4, memory_limit="128MB")
    try:
        reader.fit(40)  # (128 MB - 32 MB) / 40 MB per thread: 2 threads
        threads, limit = settings(reader)
        assert limit == pytest.approx(128_000_000, rel=0.01)
        assert threads == 2
        reader.fit(500)  # too wide even for one thread: still one, and still the user's limit
        assert settings(reader) == (1, pytest.approx(128_000_000, rel=0.01))
        reader.fit(40, pipeline=True)  # never lowered either
        assert settings(reader)[1] == pytest.approx(128_000_000, rel=0.01)
    finally:
        reader.close()


def test_an_error_while_rows_stream_is_a_warehouse_error(database: Path) -> None:
    reader = DuckDBReader(database, threads=1)
    seen = 0
    try:
        # Past DuckDB's 10 MB streaming buffer, so that batches reach the reader first.
        query = "SELECT CASE WHEN i < 4e6 THEN i ELSE error('broke at ' || i) END FROM range(5000000) r(i)"
        with pytest.raises(WarehouseError, match=r"The warehouse query failed: .*broke at"):
            for batch in reader.stream(query, batch_rows=10000):
                seen += batch.num_rows
    finally:
        reader.close()
    assert 0 < seen < 4000000  # it failed part-way, after batches were handed out


def test_out_of_memory_says_how_to_raise_the_limit(database: Path) -> None:
    reader = DuckDBReader(database, memory_limit="1MB")
    try:
        with pytest.raises(WarehouseError) as failure:
            reader.fetch_one("SELECT count(*) FROM (SELECT i, repeat('x', 100) AS s FROM t ORDER BY s, i)")
    finally:
        reader.close()
    message = str(failure.value)
    assert "Out of Memory" in message and "--memory-limit" in message
    assert "Possible solutions" not in message  # DuckDB's advice names settings heap-dbt already picks


# --- the state file: it holds row keys, so a file heap-dbt creates is the owner's only ----------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_a_state_file_heap_dbt_creates_is_0600_in_a_0700_dir(database: Path, tmp_path: Path) -> None:
    state_path = tmp_path / "state" / "heap_dbt_state.duckdb"

    reader = DuckDBReader(database, writable=True, state_path=state_path)
    try:
        store = reader.state(schema="heap_dbt", writable=True)
        assert store is not None
        assert mode(state_path) == 0o600
        assert mode(state_path.parent) == 0o700
    finally:
        reader.close()
    assert mode(state_path) == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_an_existing_state_file_keeps_the_mode_its_owner_gave_it(database: Path, tmp_path: Path) -> None:
    state_path = tmp_path / "heap_dbt_state.duckdb"
    duckdb.connect(str(state_path)).close()
    state_path.chmod(0o640)

    reader = DuckDBReader(database, writable=True, state_path=state_path)
    reader.close()

    assert mode(state_path) == 0o640
