"""dbt's newer artifact shapes, derived by hand from the dbt 1.11 artifacts of the sample project.

Each shape applies the documented differences to a real dbt 1.11 ``manifest.json`` and
``run_results.json`` (as bytes, the way dbt Cloud serves them and target/ holds them):

- ``DBT_1_12``: dbt Core 1.12. Manifest v12 and run results v6 as in 1.11; ``dbt_version``
  1.12.0, and keys 1.11 did not write (``use_v2_parser`` in the args, a result's
  ``static_analysis_off_reason``), which a reader must ignore.
- ``FUSION``: dbt Fusion / dbt Core 2.0. Manifest v12 with ``dbt_version`` 2.x; columns without
  ``data_type``; ``depends_on.nodes_with_ref_location``; run results whose ``args`` hold only
  the command (Fusion has no ``which``: ``invocation_command`` is ``build``), with no
  ``invocation_started_at``, results without ``message``, ``compiled``, ``compiled_code``,
  ``batch_results`` or (for models) ``failures``, and the statuses ``reused`` and ``no-op``
  for models it did not need to rebuild.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Files = dict[str, bytes]
"""``manifest.json`` and ``run_results.json`` by name."""

REUSED = "model.heap_demo.heap_accounts"
NO_OP = "model.heap_demo.heap_purchases"


def _edit(files: Files, change: Callable[[dict[str, Any], dict[str, Any]], None]) -> Files:
    manifest = json.loads(files["manifest.json"])
    results = json.loads(files["run_results.json"])
    change(manifest, results)
    return {
        **files,
        "manifest.json": json.dumps(manifest).encode(),
        "run_results.json": json.dumps(results).encode(),
    }


def dbt_1_12(files: Files) -> Files:
    def change(manifest: dict[str, Any], results: dict[str, Any]) -> None:
        manifest["metadata"]["dbt_version"] = "1.12.0"
        results["metadata"]["dbt_version"] = "1.12.0"
        results["args"]["use_v2_parser"] = False
        for r in results["results"]:
            r["static_analysis_off_reason"] = None

    return _edit(files, change)


def fusion(files: Files, *, command: str = "build") -> Files:
    def change(manifest: dict[str, Any], results: dict[str, Any]) -> None:
        manifest["metadata"]["dbt_version"] = "2.0.0-preview.173"
        manifest["metadata"].pop("invocation_started_at", None)
        for collection in ("nodes", "sources"):
            for node in manifest.get(collection, {}).values():
                for column in node.get("columns", {}).values():
                    column.pop("data_type", None)
                depends = node.get("depends_on")
                if isinstance(depends, dict):
                    depends["nodes_with_ref_location"] = [
                        [n, {"line": 1, "col": 1}] for n in depends.get("nodes", [])
                    ]
        results["metadata"]["dbt_version"] = "2.0.0-preview.173"
        results["metadata"].pop("invocation_started_at", None)
        results["args"] = {"invocation_command": command}
        for r in results["results"]:
            for key in ("message", "compiled", "compiled_code", "batch_results"):
                r.pop(key, None)
            if not r["unique_id"].startswith("test."):
                r.pop("failures", None)
            r["status"] = {REUSED: "reused", NO_OP: "no-op"}.get(r["unique_id"], r["status"])

    return _edit(files, change)


SHAPES: dict[str, Callable[[Files], Files]] = {
    "dbt-1.11": lambda files: files,
    "dbt-1.12": dbt_1_12,
    "fusion": fusion,
}
