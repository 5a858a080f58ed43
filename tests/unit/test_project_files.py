"""The project's own files against the manifest: edits since dbt wrote it, keys dbt dropped."""

from __future__ import annotations

import os
from pathlib import Path

from heap_dbt.manifest import load_manifest
from heap_dbt.profiles import ProjectPaths
from heap_dbt.project_files import misplaced_in_properties, newer_than_manifest
from tests.unit.test_manifest import node, write_manifest


def test_a_heap_key_beside_config_is_found_in_the_properties_file(tmp_path: Path) -> None:
    """dbt drops a model's top-level `heap:` key without a word; only the YAML shows it."""
    n = node("a") | {"patch_path": "demo://models/schema.yml"}
    other = node("b") | {"patch_path": "demo://models/schema.yml"}
    manifest = load_manifest(write_manifest(tmp_path, [n, other]))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "schema.yml").write_text(
        "version: 2\nmodels:\n  - name: a\n    Heap: {object: user}\n"
        "  - name: b\n    config: {tags: [heap]}\n"
    )
    found = misplaced_in_properties(tmp_path, manifest.models.values())
    assert [(m.name, where) for m, where in found] == [("a", "models/schema.yml: models: a: Heap")]


def test_the_newest_model_file_edited_after_the_manifest_is_named(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, [node("a")])
    written = manifest.stat().st_mtime
    (tmp_path / "models" / "marts").mkdir(parents=True)
    (tmp_path / "sql_models").mkdir()
    files = {
        "models/marts/a.sql": written - 60,  # before the manifest: parsed
        "models/marts/schema.yml": written + 30,
        "sql_models/b.sql": written + 60,  # the newest, in the second model path
        "models/notes.md": written + 90,  # not a model or properties file
        "models/.hidden/x.sql": written + 120,  # a hidden folder dbt does not read
    }
    for name, mtime in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.utime(path, (mtime, mtime))
    paths = ProjectPaths(tmp_path, tmp_path / "target", None, model_paths=("models", "sql_models"))

    assert newer_than_manifest(paths, manifest) == Path("sql_models/b.sql")
    assert newer_than_manifest(ProjectPaths(tmp_path, tmp_path, None), manifest) == Path(
        "models/marts/schema.yml"
    )
    os.utime(manifest, (written + 200, written + 200))
    assert newer_than_manifest(paths, manifest) is None
