"""The Snowflake engine without a server: profile fields to connect() arguments, and column types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from heap_dbt import sql
from heap_dbt.config import SyncSpec, resolve_columns
from heap_dbt.errors import ConfigError
from heap_dbt.manifest import ModelNode
from heap_dbt.profiles import Target
from heap_dbt.warehouse import CANDIDATES, stream_names
from heap_dbt.warehouse.snowflake.connection import SESSION_PARAMETERS, connect_args
from heap_dbt.warehouse.snowflake.dialect import SnowflakeDialect
from heap_dbt.warehouse.snowflake.types import column, heap_name, refuse

BASE = {"type": "snowflake", "account": "ab12345.eu-west-1", "user": "loader", "password": "hunter2"}


def target(**fields: Any) -> Target:
    creds = {**BASE, **fields}
    return Target(profile="demo", name="prod", type="snowflake", credentials=creds, profiles_dir=Path("."))


def without(*names: str, **fields: Any) -> Target:
    t = target(**fields)
    for n in names:
        t.credentials.pop(n)
    return t


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey, passphrase: bytes | None = None) -> str:
    algo = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algo).decode()


def test_password_profile_connects_with_every_field_it_gives() -> None:
    args = connect_args(
        target(role="TRANSFORMER", database="ANALYTICS", warehouse="WH", schema="MARTS", threads=8)
    )
    assert args["account"] == "ab12345.eu-west-1"
    assert args["user"] == "loader"
    assert args["password"] == "hunter2"
    assert (args["role"], args["database"], args["warehouse"], args["schema"]) == (
        "TRANSFORMER", "ANALYTICS", "WH", "MARTS",
    )  # fmt: skip
    assert args["protocol"] == "https"
    assert "authenticator" not in args and "host" not in args and "port" not in args
    assert args["arrow_number_to_decimal"] is True  # else NUMBER(p, s) arrives as doubles
    assert "threads" not in args


def test_host_port_and_http_reach_a_loopback_emulator() -> None:
    args = connect_args(target(host="127.0.0.1", port="8085", protocol="http"))
    assert (args["host"], args["port"], args["protocol"]) == ("127.0.0.1", 8085, "http")


def test_http_to_another_host_is_refused_since_it_would_send_the_password_in_clear() -> None:
    with pytest.raises(ConfigError, match="protocol: http") as info:
        connect_args(target(host="ab12345.snowflakecomputing.com", protocol="http"))
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"token": "abc"}, "does not support the field `token`"),
        ({"proxy_host": "10.0.0.1"}, "does not support the field `proxy_host`"),
        ({"oauth_client_id": "x"}, "`oauth_client_id`"),
        ({"authenticator": "oauth"}, "does not support authenticator 'oauth'"),
        ({"port": "eighty"}, "`port` 'eighty' is not a port number"),
        ({"protocol": "ftp", "host": "127.0.0.1"}, "`protocol` must be https"),
        ({"private_key_passphrase": "pw"}, "no private key"),
        ({"authenticator": "snowflake_jwt"}, "needs `private_key_path` or `private_key`"),
        ({"private_key": "not a key"}, "`private_key` is not a readable private key"),
        ({"private_key_path": "/nonexistent/key.p8"}, "is not a file"),
    ],
    ids=[
        "oauth-token", "proxy", "oauth-client", "oauth-authenticator", "bad-port", "bad-protocol",
        "passphrase-alone", "jwt-without-key", "unreadable-key", "missing-key-file",
    ],
)  # fmt: skip
def test_a_field_heap_dbt_cannot_use_is_a_configuration_error_naming_it(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        connect_args(target(**fields))


@pytest.mark.parametrize("name", ["account", "user", "password"])
def test_a_missing_required_field_is_named(name: str) -> None:
    with pytest.raises(ConfigError, match=f"no `{name}`"):
        connect_args(without(name))


def test_private_key_path_signs_in_with_key_pair_and_passphrase(tmp_path: Path, rsa_key: Any) -> None:
    path = tmp_path / "rsa_key.p8"
    path.write_text(pem(rsa_key, b"s3cret"))
    args = connect_args(without("password", private_key_path=str(path), private_key_passphrase="s3cret"))
    assert args["authenticator"] == "SNOWFLAKE_JWT"
    assert args["private_key"].private_numbers() == rsa_key.private_numbers()
    assert "password" not in args


def test_private_key_inline_pem_or_base64_der(rsa_key: Any) -> None:
    import base64

    der = rsa_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for text in (pem(rsa_key), base64.b64encode(der).decode()):
        args = connect_args(without("password", private_key=text, authenticator="snowflake_jwt"))
        assert args["private_key"].private_numbers() == rsa_key.private_numbers()


def test_a_wrong_passphrase_names_the_field_not_the_key(rsa_key: Any) -> None:
    text = pem(rsa_key, b"right")
    with pytest.raises(ConfigError, match="private_key_passphrase") as info:
        connect_args(without("password", private_key=text, private_key_passphrase="wrong"))
    assert "BEGIN" not in str(info.value) and "right" not in str(info.value)


def test_both_key_forms_at_once_is_ambiguous(tmp_path: Path, rsa_key: Any) -> None:
    path = tmp_path / "k.p8"
    path.write_text(pem(rsa_key))
    with pytest.raises(ConfigError, match="both `private_key` and `private_key_path`"):
        connect_args(without("password", private_key=pem(rsa_key), private_key_path=str(path)))


def test_a_key_with_a_password_authenticator_is_contradictory(rsa_key: Any) -> None:
    with pytest.raises(ConfigError, match="snowflake_jwt, not 'snowflake'"):
        connect_args(target(private_key=pem(rsa_key), authenticator="snowflake"))


def test_browser_sso_and_okta_need_no_password() -> None:
    assert connect_args(without("password", authenticator="externalbrowser"))["authenticator"] == (
        "EXTERNALBROWSER"
    )
    okta = "https://acme.okta.com"
    assert connect_args(target(authenticator=okta))["authenticator"] == okta


def test_query_tag_and_connect_timeout_carry_over_from_dbt() -> None:
    args = connect_args(target(query_tag="heap", connect_timeout=30, retry_all=True))
    assert args["session_parameters"] == {**SESSION_PARAMETERS, "QUERY_TAG": "heap"}
    assert args["login_timeout"] == 30


def test_the_session_parameters_key_text_depends_on_are_set_at_login() -> None:
    # fakesnow ignores them, so the integration tests cannot show their effect: this pins them.
    args = connect_args(target())
    assert args["session_parameters"]["TIMEZONE"] == "UTC"
    assert args["session_parameters"]["DATE_OUTPUT_FORMAT"] == "YYYY-MM-DD"
    assert args["session_parameters"]["TIMESTAMP_NTZ_OUTPUT_FORMAT"] == "YYYY-MM-DD HH24:MI:SS.FF3"


# --- types --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "kind", "sql"),
    [
        (("FIXED", 12, 2), "decimal", "DECIMAL(12,2)"),
        (("FIXED", 38, 0), "integer", "HUGEINT"),
        (("FIXED", 18, 0), "integer", "BIGINT"),
        (("REAL", None, None), "float", "DOUBLE"),
        (("TEXT", None, None), "string", "VARCHAR"),
        (("BOOLEAN", None, None), "boolean", "BOOLEAN"),
        (("DATE", None, None), "date", "DATE"),
        (("TIMESTAMP_NTZ", 0, 9), "timestamp", "TIMESTAMP"),
        (("TIMESTAMP_LTZ", 0, 9), "timestamp", "TIMESTAMP"),
        (("TIMESTAMP_TZ", 0, 9), "timestamp", "TIMESTAMP"),
        (("ARRAY", None, None), "list", "VARCHAR[]"),
        (("VARIANT", None, None), "json", "JSON"),
        (("OBJECT", None, None), "json", "JSON"),
    ],
    ids=lambda v: v[0] if isinstance(v, tuple) else None,
)
def test_each_snowflake_type_reaches_duckdb_as_a_type_the_record_sql_converts(
    meta: tuple[str, int | None, int | None], kind: str, sql: str
) -> None:
    col = column("C", *meta)
    assert (col.type.kind, col.type.sql) == (kind, sql)
    refuse(col, model="m")  # converts: no error


@pytest.mark.parametrize("type_name", ["BINARY", "GEOGRAPHY", "GEOMETRY", "VECTOR"])
def test_a_type_heap_dbt_cannot_convert_names_the_column_and_says_to_cast_it(type_name: str) -> None:
    with pytest.raises(
        ConfigError, match=f"Column PHOTO of model users is {type_name}.*cast it in the model"
    ):
        refuse(column("PHOTO", type_name, None, None), model="users")


def test_folded_upper_case_names_read_as_lower_case_and_quoted_ones_stay() -> None:
    assert heap_name("LAST_SEEN_AT") == "last_seen_at"
    assert heap_name("lastSeen") == "lastSeen"
    col = column("LAST_SEEN_AT", "TIMESTAMP_TZ", 0, 9)
    assert col.select == 'DATE_PART(EPOCH_MICROSECOND, "LAST_SEEN_AT") AS "last_seen_at"'


class _Recording:
    """A Snowflake session that records each statement and answers with no rows."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, sql: str, params: Any = None) -> Any:
        self.statements.append(sql)
        return self

    description = None

    def fetchall(self) -> list[Any]:
        return []

    def close(self) -> None: ...


def test_state_columns_are_created_under_the_names_the_statements_use() -> None:
    """Snowflake folds an unquoted name to upper case and keeps a quoted one as written, so a
    column created as "sync_id" is not found by ``WHERE sync_id = ...`` (fakesnow, case-blind
    underneath, would not show it). The state's columns are created unquoted, as named."""
    import sqlglot
    from sqlglot import exp

    from heap_dbt.warehouse.snowflake.state import SnowflakeState

    session = _Recording()
    state = SnowflakeState(
        session, database="ANALYTICS", schema="heap_dbt", writable=True,  # type: ignore[arg-type]
        connect=lambda: session,  # type: ignore[arg-type,return-value]
    )  # fmt: skip
    state._create()
    creates = [s for s in session.statements if s.startswith("CREATE TABLE")]
    assert len(creates) == 5
    for statement in creates:
        tree = sqlglot.parse_one(statement.replace("%s", "NULL"), read="snowflake")
        names = [c.this for c in tree.find_all(exp.ColumnDef)] + [
            a.args["alias"] for a in tree.find_all(exp.Alias)
        ]
        assert names, statement
        quoted = [n.name for n in names if n.quoted]
        assert quoted == [], f"quoted column names {quoted} in {statement}"


def test_names_that_differ_only_in_case_each_reach_duckdb_with_their_own_value() -> None:
    """PLAN (unquoted) beside "Plan" (quoted): Snowflake keeps both, DuckDB would read one for
    both, so they travel under names of their own. fakesnow cannot hold such a table (it is
    DuckDB underneath), so the statements run here: the Snowflake half is checked as text, the
    DuckDB half on an Arrow stream carrying what Snowflake would send."""
    found = [
        column("ID", "TEXT", None, None),
        column("PLAN", "TEXT", None, None),
        column("Plan", "TEXT", None, None),
    ]
    columns = [c.seam() for c in found]
    model = ModelNode(
        unique_id="model.demo.users", name="users", relation_name='"DB"."PUBLIC"."USERS"',
        materialized="table", meta={}, tags=(), fqn=("demo", "users"), original_file_path="models/users.sql",
    )  # fmt: skip
    problems: list[str] = []
    spec = resolve_columns(
        SyncSpec(model, "config.meta.heap", "user", "id"), [c.name for c in columns], problems
    )
    assert problems == []
    assert spec.properties == {"plan": "plan", "Plan": "Plan"}
    dialect = SnowflakeDialect()
    for c in found:
        dialect.sources[('"DB"."PUBLIC"."USERS"', c.name)] = c.source

    query = sql.record_query(spec, columns, key_seed="users", definition_seed="users", dialect=dialect)

    assert stream_names(columns) == {"id": "id", "plan": "__heap_col_1", "Plan": "__heap_col_2"}
    assert '"PLAN" AS "plan", "Plan" AS "Plan"' in query.candidates_sql
    assert '"plan" AS "__heap_col_1", "Plan" AS "__heap_col_2"' in query.candidates_sql
    stream = pa.table({
        "id": ["u1"], "__heap_col_1": ["basic"], "__heap_col_2": ["Pro"], "__key": ["u1"],
        "__heap_dups": pa.array([None], pa.int64()), "__heap_hash": [1], "__heap_k1": [2], "__heap_k2": [3],
        "__heap_new": [True],
    })  # fmt: skip
    with duckdb.connect() as con:
        con.register(CANDIDATES, stream)
        ((record,),) = con.sql(f"SELECT {sql.RECORD} FROM ({query.format_sql})").fetchall()
    assert json.loads(record.removesuffix(sql.SEPARATOR)) == {
        "identity": "u1",
        "properties": {"plan": "basic", "Plan": "Pro"},
    }
