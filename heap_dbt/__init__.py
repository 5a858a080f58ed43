"""heap-dbt: sync dbt models to Heap's server-side APIs.

The Python API (``heap_dbt.api``): ``sync``, ``sync_async``, ``run`` and ``sync_cloud`` return a
``SyncReport``; errors are the ``heap_dbt.errors`` classes exported here. Importing
heap_dbt stays cheap: the API's modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from heap_dbt.errors import (
    ConfigError,
    DbtCloudAuthError,
    DbtCloudError,
    DbtCloudNotFoundError,
    DbtCloudUnreachableError,
    DbtError,
    FatalAPIError,
    HeapAPIError,
    HeapDbtError,
    LockedError,
    ManifestError,
    MissingRelationError,
    NoArtifactsError,
    OutOfMemoryError,
    RefusedBatchError,
    RetriableAPIError,
    RunNotFinishedError,
    StateError,
    WarehouseError,
)

if TYPE_CHECKING:
    from heap_dbt.api import run, sync, sync_async, sync_cloud, sync_cloud_async
    from heap_dbt.dbt_cloud import CloudConfig
    from heap_dbt.plan import SyncOptions
    from heap_dbt.report import SkippedModel, SyncReport, SyncResult

__version__ = "0.1.0"

_LAZY = {
    "sync": "heap_dbt.api",
    "sync_async": "heap_dbt.api",
    "run": "heap_dbt.api",
    "sync_cloud": "heap_dbt.api",
    "sync_cloud_async": "heap_dbt.api",
    "CloudConfig": "heap_dbt.dbt_cloud",
    "SyncOptions": "heap_dbt.plan",
    "SyncReport": "heap_dbt.report",
    "SyncResult": "heap_dbt.report",
    "SkippedModel": "heap_dbt.report",
}

__all__ = [
    "CloudConfig",
    "ConfigError",
    "DbtCloudAuthError",
    "DbtCloudError",
    "DbtCloudNotFoundError",
    "DbtCloudUnreachableError",
    "DbtError",
    "FatalAPIError",
    "HeapAPIError",
    "HeapDbtError",
    "LockedError",
    "ManifestError",
    "MissingRelationError",
    "NoArtifactsError",
    "OutOfMemoryError",
    "RefusedBatchError",
    "RetriableAPIError",
    "RunNotFinishedError",
    "SkippedModel",
    "StateError",
    "SyncOptions",
    "SyncReport",
    "SyncResult",
    "WarehouseError",
    "__version__",
    "run",
    "sync",
    "sync_async",
    "sync_cloud",
    "sync_cloud_async",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'heap_dbt' has no attribute {name!r}")
