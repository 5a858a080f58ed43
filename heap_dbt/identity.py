"""Which state and which idempotency keys a sync continues: its identity across refactors.

A sync is known by its name (``SyncSpec.name``): the block's ``name:``, or a default made of
what identifies the sync (object, event name, key column), not of where it is declared. So
renaming, moving or versioning a model, turning its ``heap:`` block into a list, or adding,
removing or reordering blocks keeps the name, and with it the sync's state and its events'
idempotency keys: nothing is resent and no event is duplicated.

The state records each name (``heap_dbt.state.SyncName``) with the sync id of its state and
the two seeds its rows were written under: ``key_seed`` for event idempotency keys and
``definition_seed`` for the row hashes. A name the state does not know yet is either

- a sync that an earlier release wrote under its old identity (model, meta block, key and
  app_id): it is adopted with the seeds that release used (the model's label and relation),
  so upgrading heap-dbt resends nothing; or
- a new sync, whose seeds are its name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from heap_dbt.config import SyncSpec
from heap_dbt.report import SkippedModel
from heap_dbt.state import StateStore, SyncName


@dataclass(frozen=True)
class Identity:
    """The state and seeds one sync runs under."""

    sync_id: str
    key_seed: str
    definition_seed: str
    known: bool
    """The state already held this sync (by its name, or under an earlier release's identity)."""
    record: SyncName
    """What the state should hold for the name after this run."""
    stored: SyncName | None
    """What it held before (None for a name it did not know)."""


def name_id(app_id: str, obj: str, name: str) -> str:
    """A sync name's key in the state: the app_id, object and name, hashed (the app_id is secret)."""
    return hashlib.sha256("\x1f".join([app_id, obj, name]).encode()).hexdigest()[:16]


def resolve(spec: SyncSpec, app_id: str, state: StateStore | None) -> Identity:
    """The identity ``spec`` syncs under for ``app_id``, as ``state`` knows it."""
    nid = name_id(app_id, spec.object, spec.name)
    stored = state.sync_name(nid) if state is not None and state.exists else None
    if stored is not None:
        sync_id, key_seed, definition_seed = stored.sync_id, stored.key_seed, stored.definition_seed
        known = True
    else:
        legacy = spec.legacy_sync_id(app_id)
        if state is not None and state.exists and state.has_runs(legacy):
            # Written by a release before sync names: keep its state and its seeds.
            assert spec.model.relation_name is not None  # parse_specs skips ephemeral models
            sync_id, key_seed, definition_seed, known = legacy, spec.label, spec.model.relation_name, True
        else:
            sync_id, key_seed, definition_seed, known = nid, spec.name, spec.name, False
    record = SyncName(nid, spec.name, spec.object, sync_id, key_seed, definition_seed, spec.model.name)
    return Identity(sync_id, key_seed, definition_seed, known, record, stored)


def orphans(
    new: SyncSpec, state: StateStore | None, declared: AbstractSet[tuple[str, str]]
) -> list[SyncName]:
    """Names the state holds for ``new``'s model and object that no declared sync uses: what a
    sync that starts a new identity was probably called before (the user renamed it, or changed
    its key column or event name)."""
    if state is None or not state.exists:
        return []
    return [
        n
        for n in state.sync_names()
        if n.model == new.model.name and n.object == new.object and (n.object, n.name) not in declared
    ]


def unique_names(specs: list[SyncSpec], problems: list[str]) -> tuple[list[SyncSpec], list[SkippedModel]]:
    """One sync per (app_id, object, name): a name is the identity of a sync's state and of its
    events' keys, so two syncs may never share one.

    Versions of one model that declare the same sync: the latest version syncs, the others are
    skipped with the reason. Any other pair is a problem naming both, and how to part them.
    """
    by_name: dict[tuple[str, str, str], list[SyncSpec]] = {}
    for spec in specs:
        by_name.setdefault((spec.app_id or "", spec.object, spec.name), []).append(spec)
    kept: list[SyncSpec] = []
    skipped: list[SkippedModel] = []
    for (_, obj, name), group in by_name.items():
        if len(group) == 1:
            kept += group
            continue
        versions = {s.model.name for s in group} == {group[0].model.name} and all(
            s.model.version is not None for s in group
        )
        if versions:
            latest = group[0].model.latest_version
            chosen = next((s for s in group if str(s.model.version) == str(latest)), None) or max(
                group, key=lambda s: _version_order(s.model.version)
            )
            kept.append(chosen)
            skipped += [
                SkippedModel(
                    s.model.name,
                    s.model.unique_id,
                    f"version {s.model.version} declares the same {obj} sync {name!r} as version "
                    f"{chosen.model.version}, which syncs it",
                )
                for s in group
                if s is not chosen
            ]
            continue
        where = " and ".join(f"model {s.model.name}, {s.meta_path}" for s in group[:2])
        problems.append(
            f"{where} both declare the {obj} sync {name!r}: they would share one state and one set of "
            "event keys. Give each its own `name:` in its block (a sync's name must not change later)."
        )
    return kept, skipped


def _version_order(version: str | int | float | None) -> tuple[int, float, str]:
    try:
        return (1, float(str(version)), "")
    except ValueError:
        return (0, 0.0, str(version))
