"""The ``config.meta.heap`` schema: every problem reported at once, naming the model and meta path."""

from __future__ import annotations

from typing import Any

import pytest

from heap_dbt.config import SyncSpec, parse_specs, resolve_columns
from heap_dbt.manifest import ModelNode

RELATION = '"dev"."main"."dim_users"'


def at(text: str) -> str:
    """How a problem about model dim_users starts: the model, then the meta path (and option)."""
    return f"model dim_users, {text}"


def model(
    heap: Any,
    *,
    name: str = "dim_users",
    materialized: str | None = "table",
    relation_name: str | None = RELATION,
) -> ModelNode:
    return ModelNode(
        unique_id=f"model.demo.{name}",
        name=name,
        relation_name=relation_name,
        materialized=materialized,
        meta={"heap": heap},
        tags=(),
        fqn=("demo", name),
        original_file_path=f"models/{name}.sql",
    )


def parse(heap: Any, **kwargs: Any) -> tuple[list[SyncSpec], list[str]]:
    problems: list[str] = []
    specs = parse_specs([model(heap, **kwargs)], problems)
    return specs, problems


def parse_one(heap: Any) -> SyncSpec:
    specs, problems = parse(heap)
    assert problems == []
    (spec,) = specs
    return spec


def resolve(heap: Any, columns: list[str]) -> tuple[SyncSpec, list[str]]:
    spec = parse_one(heap)
    problems: list[str] = []
    return resolve_columns(spec, columns, problems), problems


EVENT = {"object": "event", "key": "event_id", "identity": "user_id", "event_name": "Signup"}
EVENT_COLUMNS = ["event_id", "user_id", "kind", "occurred_at", "plan", "amount"]


# --- parse_specs: what the manifest alone can tell ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("user", "user"),
        ("User", "user"),
        ("ACCOUNT", "account"),
        ("  event ", "event"),
        ("EVENT", "event"),
    ],
    ids=["lower", "title-case", "upper", "padded", "upper-event"],
)
def test_object_accepts_any_case(raw: str, expected: str) -> None:
    block: dict[str, Any] = {"object": raw, "key": "id"}
    if expected == "event":
        block |= {"identity": "user_id", "event_name": "Signup"}
    assert parse_one(block).object == expected


BAD_BLOCKS = [
    pytest.param(
        {"object": "person", "key": "id"}, ".object", "unknown object 'person'", id="unknown-object"
    ),
    pytest.param({"key": "id"}, ".object", "missing", id="missing-object"),
    pytest.param({"object": "user"}, ".key", "Identity", id="missing-key-user"),
    pytest.param({"object": "account"}, ".key", "Account ID", id="missing-key-account"),
    pytest.param({"object": "user", "key": ""}, ".key", "missing", id="empty-key"),
    pytest.param({"object": "user", "key": 7}, ".key", "missing", id="key-not-a-string"),
    pytest.param(
        {"object": "user", "key": "id", "colour": "red"}, ".colour", "unknown option", id="unknown-option"
    ),
    pytest.param(
        {"object": "user", "key": "id", "identity": "x"},
        ".identity",
        "event options only apply",
        id="event-option-on-user",
    ),
    pytest.param(
        {"object": "user", "key": "email", "fields": ["id"]},
        ".fields",
        "'id' is reserved",
        id="fields-list-id",
    ),
    pytest.param(
        {"object": "user", "key": "email", "fields": {"ID": "user_id"}},
        ".fields",
        "'ID' is reserved",
        id="fields-map-ID",
    ),
    pytest.param(
        {"object": "user", "key": "email", "fields": {"Id": "user_id"}},
        ".fields",
        "'Id' is reserved",
        id="fields-map-Id",
    ),
    pytest.param(
        {"object": "user", "key": "email", "fields": {"": "plan"}}, ".fields", "empty", id="fields-empty-name"
    ),
    pytest.param(
        {"object": "user", "key": "email", "fields": {"p" * 1024: "plan"}},
        ".fields",
        "1024 characters",
        id="fields-name-1024",
    ),
    pytest.param(
        {"object": "user", "key": "email", "fields": {"plan": 3}},
        ".fields",
        "expected a mapping",
        id="fields-bad-type",
    ),
    pytest.param(
        {"object": "user", "key": "email", "behavior": "append"},
        ".behavior",
        "'append' is not supported for user",
        id="behavior-append-on-user",
    ),
    pytest.param(
        {**EVENT, "behavior": "upsert"},
        ".behavior",
        "'upsert' is not supported for event",
        id="behavior-upsert-on-event",
    ),
    pytest.param(
        {"object": "user", "key": "id", "truncate": "yes"},
        ".truncate",
        "true or false",
        id="truncate-not-bool",
    ),
    pytest.param(
        {"object": "user", "key": "id", "nulls": "drop"},
        ".nulls",
        "'drop' is not an option; use keep (the default: a NULL leaves Heap's value in place) or clear "
        "(a NULL is sent as an empty string).",
        id="nulls-unknown",
    ),
    pytest.param(
        {"object": "user", "key": "id", "nulls": True}, ".nulls", "True is not an option", id="nulls-bool"
    ),
    pytest.param(
        {"object": "user", "key": "id", "app_id": " "}, ".app_id", "Heap environment ID", id="app-id-blank"
    ),
    pytest.param(
        {"object": "user", "key": "id", "app_id": ["1"]}, ".app_id", "Heap environment ID", id="app-id-list"
    ),
    pytest.param(
        {"object": "event", "key": "event_id", "event_name": "Signup"},
        ".identity",
        "missing",
        id="event-missing-identity",
    ),
    pytest.param(
        {"object": "event", "key": "event_id", "identity": "user_id"},
        ".event_name",
        "missing",
        id="event-missing-name",
    ),
    pytest.param({**EVENT, "event_name_column": "kind"}, "", "not both", id="event-name-and-column"),
    pytest.param({**EVENT, "event_name": "E" * 1025}, ".event_name", "1024", id="event-name-too-long"),
    pytest.param(
        {**EVENT, "timestamp": 5}, ".timestamp", "non-empty string", id="event-timestamp-not-string"
    ),
    pytest.param("user", "", "expected a mapping", id="block-not-a-mapping"),
    pytest.param(None, "", "expected a mapping", id="block-null"),
]


@pytest.mark.parametrize(("block", "option", "message"), BAD_BLOCKS)
def test_bad_block_is_reported_with_model_and_meta_path(block: Any, option: str, message: str) -> None:
    specs, problems = parse(block)
    assert specs == []
    assert len(problems) == 1, problems
    assert problems[0].startswith(at(f"config.meta.heap{option}: ")), problems[0]
    assert message in problems[0]


@pytest.mark.parametrize(
    "block",
    [
        {"object": "user", "key": "id", "behavior": "update_or_create"},
        {"object": "account", "key": "id", "behavior": "UPDATE_OR_CREATE"},
        {**EVENT, "behavior": "append"},
    ],
    ids=["user-update_or_create", "account-upper-case", "event-append"],
)
def test_default_behavior_may_be_spelled_out(block: dict[str, Any]) -> None:
    spec = parse_one(block)
    assert spec.behavior == block["behavior"].lower()


def test_property_name_of_1023_characters_is_accepted() -> None:
    spec = parse_one({"object": "user", "key": "email", "fields": {"p" * 1023: "plan"}})
    assert spec.fields == {"p" * 1023: "plan"}


def test_fields_list_maps_each_column_to_itself() -> None:
    spec = parse_one({"object": "user", "key": "email", "fields": ["plan", "Country"]})
    assert spec.fields == {"plan": "plan", "Country": "Country"}


def test_event_block_keeps_event_options() -> None:
    spec = parse_one({**EVENT, "timestamp": "occurred_at", "truncate": True, "app_id": 123})
    assert (spec.object, spec.key, spec.identity, spec.event_name, spec.timestamp) == (
        "event",
        "event_id",
        "user_id",
        "Signup",
        "occurred_at",
    )
    assert spec.truncate is True
    assert spec.app_id == "123"
    assert spec.behavior == "append"


def test_every_problem_of_a_block_is_reported_at_once() -> None:
    block = {
        "object": "event",
        "behavior": "upsert",
        "colour": "red",
        "fields": {"id": "x"},
        "truncate": 1,
    }
    specs, problems = parse(block)
    assert specs == []
    where = at("config.meta.heap.")
    assert all(p.startswith(where) for p in problems), problems
    found = sorted(p.removeprefix(where).split(":")[0] for p in problems)
    assert found == ["behavior", "colour", "event_name", "fields", "identity", "key", "truncate"]


def test_problems_of_every_model_are_reported_together() -> None:
    problems: list[str] = []
    models = [
        model({"object": "person", "key": "id"}, name="a"),
        model({"object": "user", "key": "id"}, name="b"),
        model({"object": "user"}, name="c"),
    ]
    specs = parse_specs(models, problems)
    assert [s.model.name for s in specs] == ["b"]
    assert [p.split(",")[0] for p in problems] == ["model a", "model c"]


def test_heap_as_a_list_gives_one_spec_per_block_with_indexed_paths() -> None:
    blocks = [{"object": "user", "key": "id"}, {**EVENT}]
    specs, problems = parse(blocks)
    assert problems == []
    assert [(s.meta_path, s.object, s.label) for s in specs] == [
        ("config.meta.heap[0]", "user", "dim_users[0]"),
        ("config.meta.heap[1]", "event", "dim_users[1]"),
    ]


def test_heap_as_a_list_reports_problems_by_index() -> None:
    blocks = [{"object": "usr", "key": "id"}, {"object": "user", "nope": 1}]
    specs, problems = parse(blocks)
    assert specs == []
    assert [p.split(":")[0] for p in problems] == [
        at("config.meta.heap[0].object"),
        at("config.meta.heap[1].nope"),
        at("config.meta.heap[1].key"),
    ]


def test_single_block_label_is_the_model_name() -> None:
    assert parse_one({"object": "user", "key": "id"}).label == "dim_users"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"materialized": "ephemeral", "relation_name": None},
        {"materialized": "ephemeral", "relation_name": RELATION},
        {"materialized": "table", "relation_name": None},
    ],
    ids=["ephemeral", "ephemeral-with-relation", "no-relation-name"],
)
def test_model_without_a_table_is_reported(kwargs: dict[str, Any]) -> None:
    specs, problems = parse({"object": "user", "key": "id"}, **kwargs)
    assert specs == []
    assert len(problems) == 1
    assert problems[0].startswith(at("config.meta.heap: the model is ephemeral"))
    assert "materialize it as a table or view" in problems[0]


def test_ephemeral_model_with_two_blocks_names_each_block() -> None:
    blocks = [{"object": "user", "key": "id"}, {"object": "account", "key": "id"}]
    _, problems = parse(blocks, materialized="ephemeral", relation_name=None)
    assert [p.split(":")[0] for p in problems] == [
        at("config.meta.heap[0]"),
        at("config.meta.heap[1]"),
    ]


# --- resolve_columns: the spec against the table's real columns ------------------------------


@pytest.mark.parametrize(
    ("block", "columns", "expected"),
    [
        pytest.param(
            {"object": "user", "key": "email"},
            ["email", "plan", "country"],
            {"plan": "plan", "country": "country"},
            id="user-all-but-key",
        ),
        pytest.param(
            {"object": "account", "key": "account_id"},
            ["account_id", "name"],
            {"name": "name"},
            id="account-all-but-key",
        ),
        pytest.param(
            {**EVENT, "timestamp": "occurred_at"},
            EVENT_COLUMNS,
            {"kind": "kind", "plan": "plan", "amount": "amount"},
            id="event-fixed-name",
        ),
        pytest.param(
            {
                **{k: v for k, v in EVENT.items() if k != "event_name"},
                "event_name_column": "kind",
                "timestamp": "occurred_at",
            },
            EVENT_COLUMNS,
            {"plan": "plan", "amount": "amount"},
            id="event-name-column",
        ),
        pytest.param(
            {"object": "user", "key": "email"},
            ["email"],
            {},
            id="only-the-key",
        ),
    ],
)
def test_default_properties_are_every_column_but_the_reserved_ones(
    block: dict[str, Any], columns: list[str], expected: dict[str, str]
) -> None:
    spec, problems = resolve(block, columns)
    assert problems == []
    assert spec.properties == expected


def test_fields_map_properties_to_columns() -> None:
    spec, problems = resolve(
        {"object": "user", "key": "email", "fields": {"Plan name": "plan", "email": "email"}},
        ["email", "plan", "country"],
    )
    assert problems == []
    assert spec.properties == {"Plan name": "plan", "email": "email"}


@pytest.mark.parametrize(
    ("block", "columns", "resolved"),
    [
        pytest.param(
            {"object": "user", "key": "EMAIL", "fields": ["Plan"]},
            ["email", "plan"],
            {"key": "email", "properties": {"Plan": "plan"}},
            id="upper-in-meta",
        ),
        pytest.param(
            {"object": "user", "key": "email"},
            ["EMAIL", "PLAN"],
            {"key": "EMAIL", "properties": {"PLAN": "PLAN"}},
            id="upper-in-table",
        ),
        pytest.param(
            {**EVENT, "key": "Event_ID", "identity": "USER_ID", "timestamp": "Occurred_At"},
            EVENT_COLUMNS,
            {
                "key": "event_id",
                "identity": "user_id",
                "timestamp": "occurred_at",
                "properties": {"kind": "kind", "plan": "plan", "amount": "amount"},
            },
            id="event-columns",
        ),
        pytest.param(
            {**{k: v for k, v in EVENT.items() if k != "event_name"}, "event_name_column": "KIND"},
            EVENT_COLUMNS,
            {"event_name_column": "kind"},
            id="event-name-column",
        ),
        pytest.param(
            {"object": "user", "key": "email", "fields": ["plan"]},
            ["email", "plan", "PLAN"],
            {"properties": {"plan": "plan"}},
            id="exact-match-wins-over-folded",
        ),
    ],
)
def test_columns_match_case_insensitively(
    block: dict[str, Any], columns: list[str], resolved: dict[str, Any]
) -> None:
    spec, problems = resolve(block, columns)
    assert problems == []
    assert {attr: getattr(spec, attr) for attr in resolved} == resolved


@pytest.mark.parametrize(
    ("block", "path", "column"),
    [
        pytest.param({"object": "user", "key": "mail"}, "key", "mail", id="key"),
        pytest.param(
            {"object": "user", "key": "email", "fields": {"Plan": "tier"}}, "fields.Plan", "tier", id="fields"
        ),
        pytest.param({**EVENT, "identity": "who"}, "identity", "who", id="identity"),
        pytest.param({**EVENT, "timestamp": "at"}, "timestamp", "at", id="timestamp"),
        pytest.param(
            {**{k: v for k, v in EVENT.items() if k != "event_name"}, "event_name_column": "name"},
            "event_name_column",
            "name",
            id="event-name-column",
        ),
    ],
)
def test_missing_column_is_reported(block: dict[str, Any], path: str, column: str) -> None:
    columns = ["email", "plan", *EVENT_COLUMNS]
    _, problems = resolve(block, columns)
    assert len(problems) == 1, problems
    assert problems[0].startswith(at(f"config.meta.heap.{path}: column {column!r} is not in {RELATION}"))
    assert "its columns are email, plan, event_id" in problems[0]


def test_ambiguous_folded_column_is_reported() -> None:
    _, problems = resolve({"object": "user", "key": "email"}, ["Email", "EMAIL"])
    assert len(problems) == 1
    assert "column 'email' is not in" in problems[0]


def test_every_missing_column_is_reported_at_once() -> None:
    block = {**EVENT, "key": "k", "identity": "who", "timestamp": "at", "fields": {"a": "x", "b": "y"}}
    _, problems = resolve(block, EVENT_COLUMNS)
    assert [p.split(":")[0].removeprefix(at("config.meta.heap.")) for p in problems] == [
        "key",
        "identity",
        "timestamp",
        "fields.a",
        "fields.b",
    ]


@pytest.mark.parametrize("column", ["id", "ID", "Id"], ids=["id", "ID", "Id"])
def test_id_column_as_default_property_is_reported(column: str) -> None:
    _, problems = resolve({"object": "user", "key": "email"}, ["email", column, "plan"])
    assert len(problems) == 1
    assert problems[0].startswith(at(f"config.meta.heap (column {column!r}, no `fields` given)"))
    assert "reserved by Heap" in problems[0]


def test_id_column_that_is_the_key_is_not_a_property() -> None:
    spec, problems = resolve({"object": "user", "key": "id"}, ["ID", "plan"])
    assert problems == []
    assert (spec.key, spec.properties) == ("ID", {"plan": "plan"})


def test_id_column_left_out_by_fields_is_fine() -> None:
    spec, problems = resolve({"object": "user", "key": "email", "fields": ["plan"]}, ["email", "id", "plan"])
    assert problems == []
    assert spec.properties == {"plan": "plan"}


def test_long_column_name_as_default_property_is_reported() -> None:
    long = "c" * 1024
    _, problems = resolve({"object": "user", "key": "email"}, ["email", long, "c" * 1023])
    assert len(problems) == 1
    assert "is 1024 characters; Heap accepts at most 1023" in problems[0]


def test_resolve_keeps_the_parsed_options() -> None:
    spec, problems = resolve({**EVENT, "truncate": True, "app_id": "42", "nulls": "clear"}, EVENT_COLUMNS)
    assert problems == []
    assert (spec.truncate, spec.nulls, spec.app_id, spec.behavior, spec.event_name, spec.meta_path) == (
        True,
        "clear",
        "42",
        "append",
        "Signup",
        "config.meta.heap",
    )


# --- sync names and the legacy sync id --------------------------------------------------------


def test_the_legacy_sync_id_is_the_one_earlier_releases_wrote() -> None:
    """Upgrading adopts the state an earlier release wrote under this id: it must never change."""
    spec = parse_one({"object": "user", "key": "email"})
    assert spec.legacy_sync_id("111") == "7011a1ec632eb345"
    assert "9876543210" not in spec.legacy_sync_id("9876543210")


@pytest.mark.parametrize(
    ("heap", "name"),
    [
        ({"object": "user", "key": "email"}, "user:email"),
        ({"object": "account", "key": "Account_ID"}, "account:account_id"),
        ({**EVENT, "event_name": "Order Placed"}, "event:Order Placed:event_id"),
        ({**EVENT, "event_name": None, "event_name_column": "Kind"}, "event:[kind]:event_id"),
        ({"object": "user", "key": "email", "name": " crm users "}, "crm users"),
    ],
)
def test_a_sync_is_named_by_what_identifies_it(heap: dict[str, Any], name: str) -> None:
    assert parse_one(heap).name == name


def test_the_default_name_does_not_depend_on_where_the_block_is_declared() -> None:
    """Renaming or moving the model, or turning its block into a list, keeps the name."""
    block = {**EVENT, "event_name": "Order Placed"}
    (alone,), _ = parse(block, name="orders")
    (_user, listed), _ = parse([{"object": "user", "key": "email"}, block], name="fct_orders")
    assert alone.name == listed.name == "event:Order Placed:event_id"
    assert alone.label != listed.label


@pytest.mark.parametrize("bad", ["", "   ", 7, "a\nb", "x" * 201])
def test_a_bad_sync_name_is_a_problem(bad: Any) -> None:
    _, problems = parse({"object": "user", "key": "email", "name": bad})
    assert len(problems) == 1 and ".name: expected a non-empty name" in problems[0]


def test_two_event_blocks_of_one_model_have_distinct_names() -> None:
    blocks = [{**EVENT, "event_name": "Signup"}, {**EVENT, "event_name": "Activated"}]
    specs, problems = parse(blocks)
    assert problems == []
    first, second = specs
    assert first.name != second.name


# --- unknown options: "did you mean" for a misspelling or a name borrowed from elsewhere ----------

USER_BY_EMAIL = {"object": "user", "key": "email"}


@pytest.mark.parametrize(
    ("base", "option", "suggestion"),
    [
        pytest.param(USER_BY_EMAIL, "propertes", "fields", id="propertes-fields"),
        pytest.param(USER_BY_EMAIL, "properties", "fields", id="heap-word-properties"),
        pytest.param(USER_BY_EMAIL, "columns", "fields", id="columns"),
        pytest.param(USER_BY_EMAIL, "feilds", "fields", id="feilds"),
        pytest.param(USER_BY_EMAIL, "objet", "object", id="objet"),
        pytest.param(USER_BY_EMAIL, "type", "object", id="type"),
        pytest.param(USER_BY_EMAIL, "app-id", "app_id", id="app-id"),
        pytest.param(USER_BY_EMAIL, "truncated", "truncate", id="truncated"),
        pytest.param(USER_BY_EMAIL, "behaviour", "behavior", id="behaviour"),
        pytest.param(EVENT, "idenity", "identity", id="idenity"),
        pytest.param(EVENT, "timestmp", "timestamp", id="timestmp"),
        pytest.param(EVENT, "event", "event_name", id="event"),
    ],
)
def test_an_unknown_option_names_the_one_meant(base: dict[str, Any], option: str, suggestion: str) -> None:
    _, (problem,) = parse({**base, option: "x"})

    head = at(f"config.meta.heap.{option}: unknown option")
    assert problem.startswith(f"{head} (did you mean {suggestion!r}?); allowed: ")


@pytest.mark.parametrize("option", ["colour", "zzz", "idenity"])
def test_no_suggestion_when_nothing_is_close(option: str) -> None:
    _, (problem,) = parse({**USER_BY_EMAIL, option: "x"})  # idenity: identity is an event option only

    assert "did you mean" not in problem and "unknown option; allowed: " in problem
