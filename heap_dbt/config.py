"""The ``config.meta.heap`` schema: parse each block into a SyncSpec and report every problem.

Validation runs in two passes. ``parse_specs`` checks what the manifest alone can tell
(objects, options, names); ``resolve_columns`` checks the spec against the model's real
columns. Both collect problems instead of stopping at the first, so a user fixes them all
in one go.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from heap_dbt.manifest import ModelNode

ObjectType = Literal["user", "account", "event"]
OBJECTS: tuple[ObjectType, ...] = ("user", "account", "event")
DEFAULT_BEHAVIOR = {"user": "update_or_create", "account": "update_or_create", "event": "append"}
KEY_NAMES = {"user": "Identity", "account": "Account ID", "event": "Insert ID"}
MAX_PROPERTY_NAME = 1023  # Heap: "fewer than 1024 characters"

_COMMON_OPTIONS = {"object", "key", "fields", "behavior", "app_id", "truncate", "name", "nulls"}
MAX_SYNC_NAME = 200
NULLS = ("keep", "clear")
"""``nulls:``: leave a NULL property out (Heap keeps its old value), or send it as ``""``."""
_EVENT_OPTIONS = {"identity", "event_name", "event_name_column", "timestamp"}
# Names users reach for, from Heap's docs and other reverse-ETL tools, and the option meant.
_OPTION_ALIASES = {
    "properties": "fields", "columns": "fields", "props": "fields", "mapping": "fields",
    "type": "object", "id": "key", "event": "event_name", "sync_name": "name",
}  # fmt: skip


@dataclass(frozen=True)
class SyncSpec:
    """One declared sync: a model feeding one Heap object."""

    model: ModelNode
    meta_path: str
    object: ObjectType
    key: str
    fields: dict[str, str] | None = None
    identity: str | None = None
    event_name: str | None = None
    event_name_column: str | None = None
    timestamp: str | None = None
    behavior: str = "update_or_create"
    app_id: str | None = None
    truncate: bool = False
    properties: dict[str, str] = field(default_factory=dict)
    """Heap property name -> column, filled in by ``resolve_columns``."""
    nulls: str = "keep"
    """``keep``: a NULL property is left out of the record; ``clear``: it is sent as ``""``."""
    name: str = ""
    """The sync's name: its identity in the state and the seed of its events' idempotency keys.
    The block's ``name:``, else ``default_name()``, which renaming, moving or versioning the
    model, or turning its ``heap:`` block into a list, does not change."""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.default_name())

    def default_name(self) -> str:
        """``user:<key>``, ``account:<key>``, ``event:<event name>:<key>`` (``event:[<column>]:<key>``
        for a name read from a column): what identifies the sync, not where it is declared."""
        key = self.key.lower()
        if self.object != "event":
            return f"{self.object}:{key}"
        event = self.event_name if self.event_name else f"[{(self.event_name_column or '').lower()}]"
        return f"event:{event}:{key}"

    @property
    def label(self) -> str:
        """How messages and reports name this sync: ``model`` or ``model[1]``."""
        suffix = self.meta_path.removeprefix("config.meta.heap")
        return f"{self.model.name}{suffix}"

    def legacy_sync_id(self, app_id: str) -> str:
        """The identity releases before sync names gave a sync (model, meta block, object, key
        column and app_id, hashed): how ``heap_dbt.identity`` finds the state they wrote."""
        raw = "\x1f".join([self.model.unique_id, self.meta_path, self.object, self.key, app_id])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def reserved_columns(self) -> set[str]:
        """Columns that carry the key or event fields rather than properties."""
        cols = {self.key}
        for col in (self.identity, self.event_name_column, self.timestamp):
            if col:
                cols.add(col)
        return cols


def _where(model: ModelNode, path: str) -> str:
    return f"model {model.name}, {path}"


def _did_you_mean(option: str, allowed: set[str]) -> str:
    """`` (did you mean 'fields'?)`` for a misspelt or borrowed option name, else empty."""
    names = {o: o for o in allowed} | {a: o for a, o in _OPTION_ALIASES.items() if o in allowed}
    close = difflib.get_close_matches(str(option).lower(), names, n=1, cutoff=0.7)
    return f" (did you mean {names[close[0]]!r}?)" if close else ""


def _check_property_name(name: str, where: str, problems: list[str]) -> None:
    if not name:
        problems.append(f"{where}: a property name is empty.")
    elif name.lower() == "id":
        problems.append(
            f"{where}: property {name!r} is reserved by Heap (any casing of 'id'); rename it in `fields`."
        )
    elif len(name) > MAX_PROPERTY_NAME:
        problems.append(
            f"{where}: property name {name[:40]!r}... is {len(name)} characters; Heap "
            f"accepts at most {MAX_PROPERTY_NAME}."
        )


def _parse_block(model: ModelNode, block: Any, path: str, problems: list[str]) -> SyncSpec | None:
    where = _where(model, path)
    if not isinstance(block, dict):
        problems.append(f"{where}: expected a mapping with at least `object` and `key`.")
        return None
    found = len(problems)
    obj_raw = block.get("object")
    obj = str(obj_raw).strip().lower() if obj_raw is not None else None
    if obj is None:
        problems.append(f"{where}.object: missing; set it to user, account or event.")
    elif obj not in OBJECTS:
        problems.append(f"{where}.object: unknown object {obj_raw!r}; use user, account or event.")
    allowed = _COMMON_OPTIONS | (_EVENT_OPTIONS if obj == "event" else set())
    for option in block:
        if option not in allowed:
            if option in _EVENT_OPTIONS:
                hint = " (event options only apply to `object: event`)"
            else:
                hint = _did_you_mean(option, allowed)
            problems.append(f"{where}.{option}: unknown option{hint}; allowed: {', '.join(sorted(allowed))}.")
    key = block.get("key")
    if not key or not isinstance(key, str):
        what = KEY_NAMES.get(obj or "", "sync key")
        problems.append(f"{where}.key: missing; name the column that holds the {what}.")
    fields = block.get("fields")
    parsed_fields: dict[str, str] | None = None
    if fields is not None:
        if isinstance(fields, list) and all(isinstance(c, str) for c in fields):
            parsed_fields = {c: c for c in fields}
        elif isinstance(fields, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in fields.items()
        ):
            parsed_fields = dict(fields)
        else:
            problems.append(f"{where}.fields: expected a mapping of Heap property -> column name.")
        for prop in parsed_fields or {}:
            _check_property_name(prop, f"{where}.fields", problems)
    behavior = block.get("behavior")
    default_behavior = DEFAULT_BEHAVIOR.get(obj or "", "")
    if behavior is not None and str(behavior).lower() != default_behavior:
        problems.append(
            f"{where}.behavior: {behavior!r} is not supported for {obj or 'this object'}; "
            f"the only behavior is {default_behavior or 'set by the object'} (omit it)."
        )
    app_id = block.get("app_id")
    if app_id is not None and (not isinstance(app_id, str | int) or not str(app_id).strip()):
        problems.append(f"{where}.app_id: expected your Heap environment ID as a string.")
    truncate = block.get("truncate", False)
    if not isinstance(truncate, bool):
        problems.append(f"{where}.truncate: expected true or false.")
    name = block.get("name")
    if name is not None and (
        not isinstance(name, str) or not name.strip() or len(name) > MAX_SYNC_NAME or not name.isprintable()
    ):
        problems.append(
            f"{where}.name: expected a non-empty name of printable characters, at most {MAX_SYNC_NAME} long."
        )
    nulls = block.get("nulls", "keep")
    if nulls not in NULLS:
        problems.append(
            f"{where}.nulls: {nulls!r} is not an option; use keep (the default: a NULL leaves Heap's "
            "value in place) or clear (a NULL is sent as an empty string)."
        )
    event_opts: dict[str, str | None] = {}
    if obj == "event":
        for opt in ("identity", "event_name", "event_name_column", "timestamp"):
            value = block.get(opt)
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"{where}.{opt}: expected a non-empty string.")
                value = None
            event_opts[opt] = value
        if not event_opts["identity"]:
            problems.append(
                f"{where}.identity: missing; events need the column that holds the user's identity."
            )
        if event_opts["event_name"] and event_opts["event_name_column"]:
            problems.append(f"{where}: set either event_name (a fixed name) or event_name_column, not both.")
        elif not event_opts["event_name"] and not event_opts["event_name_column"]:
            problems.append(
                f"{where}.event_name: missing; set event_name: <Name> or event_name_column: <column>."
            )
        elif event_opts["event_name"] and len(event_opts["event_name"]) > 1024:
            problems.append(f"{where}.event_name: longer than Heap's 1024 characters.")
    if len(problems) > found or obj is None or not isinstance(key, str):
        return None
    return SyncSpec(
        model=model,
        meta_path=path,
        object=obj,  # type: ignore[arg-type]  # checked against OBJECTS above
        key=key,
        fields=parsed_fields,
        behavior=default_behavior,
        app_id=str(app_id) if app_id is not None else None,
        truncate=bool(truncate),
        nulls=str(nulls),
        identity=event_opts.get("identity"),
        event_name=event_opts.get("event_name"),
        event_name_column=event_opts.get("event_name_column"),
        timestamp=event_opts.get("timestamp"),
        name=name.strip() if isinstance(name, str) else "",
    )


def parse_specs(models: list[ModelNode], problems: list[str]) -> list[SyncSpec]:
    """Every sync declared by ``models``; problems are appended to ``problems``."""
    specs: list[SyncSpec] = []
    for model in models:
        heap = model.meta.get("heap")
        blocks = heap if isinstance(heap, list) else [heap]
        for i, block in enumerate(blocks):
            path = "config.meta.heap" + (f"[{i}]" if isinstance(heap, list) else "")
            if model.materialized == "ephemeral" or not model.relation_name:
                problems.append(
                    f"{_where(model, path)}: the model is ephemeral and has no table to read; "
                    "materialize it as a table or view."
                )
                continue
            spec = _parse_block(model, block, path, problems)
            if spec is not None:
                specs.append(spec)
    return specs


def resolve_columns(spec: SyncSpec, columns: list[str], problems: list[str]) -> SyncSpec:
    """Check ``spec`` against the table's ``columns`` and fill in its properties.

    Column names match exactly, or case-insensitively when that is unambiguous, since
    most warehouses fold unquoted names.
    """
    where = _where(spec.model, spec.meta_path)
    exact = set(columns)
    folded: dict[str, list[str]] = {}
    for c in columns:
        folded.setdefault(c.lower(), []).append(c)

    def find(col: str, path: str) -> str:
        if col in exact:
            return col
        candidates = folded.get(col.lower(), [])
        if len(candidates) == 1:
            return candidates[0]
        problems.append(
            f"{where}.{path}: column {col!r} is not in {spec.model.relation_name}; "
            f"its columns are {', '.join(columns)}."
        )
        return col

    key = find(spec.key, "key")
    event_cols = {
        opt: find(getattr(spec, opt), opt) if getattr(spec, opt) else None
        for opt in ("identity", "event_name_column", "timestamp")
    }
    resolved = SyncSpec(
        model=spec.model,
        meta_path=spec.meta_path,
        object=spec.object,
        key=key,
        fields=spec.fields,
        identity=event_cols["identity"],
        event_name=spec.event_name,
        event_name_column=event_cols["event_name_column"],
        timestamp=event_cols["timestamp"],
        behavior=spec.behavior,
        app_id=spec.app_id,
        truncate=spec.truncate,
        name=spec.name,
        nulls=spec.nulls,
    )
    if spec.fields is not None:
        props = {prop: find(col, f"fields.{prop}") for prop, col in spec.fields.items()}
    else:
        reserved = resolved.reserved_columns()
        props = {c: c for c in columns if c not in reserved}
        for prop in props:
            _check_property_name(prop, f"{where} (column {prop!r}, no `fields` given)", problems)
    object.__setattr__(resolved, "properties", props)
    return resolved
