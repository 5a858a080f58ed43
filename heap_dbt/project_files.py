"""What the dbt project's own files say that the manifest does not: a model or properties file
edited since dbt wrote the manifest, and a ``heap:`` key that dbt dropped from a properties file.

Only a local project has these files; artifacts from dbt Cloud come without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from heap_dbt.manifest import ModelNode, is_heap_key
from heap_dbt.profiles import ProjectPaths

MODEL_FILES = (".sql", ".py", ".yml", ".yaml")
"""The model-path files whose edits dbt must parse into the manifest."""


def newer_than_manifest(paths: ProjectPaths, manifest_path: Path) -> Path | None:
    """The newest model or properties file under the model paths, relative to the project dir,
    if it changed after dbt wrote ``manifest_path``; else None."""
    try:
        written = manifest_path.stat().st_mtime
    except OSError:
        return None
    newest: tuple[float, Path] | None = None
    for folder in paths.model_paths:
        for root, dirs, files in os.walk(paths.project_dir / folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if not name.endswith(MODEL_FILES):
                    continue
                path = Path(root, name)
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    continue
                if mtime > written and (newest is None or mtime > newest[0]):
                    newest = (mtime, path)
    if newest is None:
        return None
    try:
        return newest[1].relative_to(paths.project_dir)
    except ValueError:
        return newest[1]


def misplaced_in_properties(project_dir: Path, models: Iterable[ModelNode]) -> list[tuple[ModelNode, str]]:
    """The models whose properties YAML has a ``heap:`` key beside ``config`` (or another case of
    it): dbt drops such a key without a word, so only the file shows it. Reads only the
    properties files that hold the word, once each."""
    found: list[tuple[ModelNode, str]] = []
    files: dict[str, Any] = {}
    for m in models:
        if not m.patch_path or "://" not in m.patch_path:
            continue
        relative = m.patch_path.split("://", 1)[1]
        if relative not in files:
            files[relative] = _properties(project_dir / relative)
        doc = files[relative]
        entries = doc.get("models") if isinstance(doc, dict) else None
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and entry.get("name") == m.name:
                found += [(m, f"{relative}: models: {m.name}: {k}") for k in entry if is_heap_key(k)]
    return found


def _properties(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if "heap" not in text.lower():
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None  # dbt parsed it; a file changed since is the stale-manifest warning's concern
