"""An unknown meta option gets a "did you mean" for a misspelling or a name borrowed from elsewhere."""

from __future__ import annotations

from typing import Any

import pytest

from heap_dbt.config import parse_specs
from heap_dbt.manifest import ModelNode

USER = {"object": "user", "key": "email"}
EVENT = {"object": "event", "key": "event_id", "identity": "user_id", "event_name": "Signup"}


def problems_of(block: dict[str, Any]) -> list[str]:
    node = ModelNode(
        unique_id="model.demo.dim_users", name="dim_users", relation_name='"dev"."main"."dim_users"',
        materialized="table", meta={"heap": block}, tags=(), fqn=("demo", "dim_users"),
        original_file_path="models/dim_users.sql",
    )  # fmt: skip
    problems: list[str] = []
    parse_specs([node], problems)
    return problems


@pytest.mark.parametrize(
    ("base", "option", "suggestion"),
    [
        pytest.param(USER, "propertes", "fields", id="propertes-fields"),
        pytest.param(USER, "properties", "fields", id="heap-word-properties"),
        pytest.param(USER, "columns", "fields", id="columns"),
        pytest.param(USER, "feilds", "fields", id="feilds"),
        pytest.param(USER, "objet", "object", id="objet"),
        pytest.param(USER, "type", "object", id="type"),
        pytest.param(USER, "app-id", "app_id", id="app-id"),
        pytest.param(USER, "truncated", "truncate", id="truncated"),
        pytest.param(USER, "behaviour", "behavior", id="behaviour"),
        pytest.param(EVENT, "idenity", "identity", id="idenity"),
        pytest.param(EVENT, "timestmp", "timestamp", id="timestmp"),
        pytest.param(EVENT, "event", "event_name", id="event"),
    ],
)
def test_an_unknown_option_names_the_one_meant(base: dict[str, Any], option: str, suggestion: str) -> None:
    (problem,) = problems_of({**base, option: "x"})

    head = f"model dim_users, config.meta.heap.{option}: unknown option"
    assert problem.startswith(f"{head} (did you mean {suggestion!r}?); allowed: ")


@pytest.mark.parametrize("option", ["colour", "zzz", "idenity"])
def test_no_suggestion_when_nothing_is_close(option: str) -> None:
    (problem,) = problems_of({**USER, option: "x"})  # idenity: identity is an event option only

    assert "did you mean" not in problem and "unknown option; allowed: " in problem
