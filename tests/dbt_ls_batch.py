"""Run ``dbt ls`` for many selections in one process: dbt is imported and the project parsed once.

Usage: ``python tests/dbt_ls_batch.py PROJECT_DIR SCRATCH_TARGET OUT.json < CASES.json``, where
CASES is a JSON list of argument lists (e.g. ``[["--select", "tag:heap"]]``). OUT gets, for each
case, ``{"args", "ok", "names", "error"}``, with the names of the selected models sorted. One
``dbt ls`` on the command line costs seconds (import and parse); here each costs milliseconds.
The scratch target path keeps the project's own target/ (the manifest heap-dbt reads) untouched.

dbt imports every top-level module whose name starts with ``dbt_`` as a plugin, and this
script's folder, tests/, is first on sys.path: no other module in tests/ may be named so.
"""

from __future__ import annotations

import json
import sys

from dbt.cli.main import dbtRunner


def main() -> None:
    project, target, out = sys.argv[1:4]
    cases = json.loads(sys.stdin.read())
    base = ["--project-dir", project, "--profiles-dir", project, "--target-path", target, "--quiet"]
    parsed = dbtRunner().invoke(["parse", *base])
    if not parsed.success:
        raise SystemExit(f"dbt parse failed: {parsed.exception}")
    runner = dbtRunner(manifest=parsed.result)
    results = []
    for args in cases:
        res = runner.invoke(["ls", *base, "--resource-type", "model", "--output", "name", *args])
        results.append(
            {
                "args": args,
                "ok": res.success,
                "names": sorted(res.result) if res.success and res.result is not None else None,
                "error": str(res.exception) if res.exception else None,
            }
        )
    with open(out, "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
