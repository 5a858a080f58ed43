"""Find the dbt project, its target path and the warehouse connection, the way dbt does.

profiles.yml is rendered with a small Jinja environment that knows dbt's ``env_var()``
and its ``as_*`` filters, so heap-dbt does not have to import dbt-core (1.5 s) to read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from heap_dbt.errors import ConfigError

if TYPE_CHECKING:
    from jinja2.nativetypes import NativeEnvironment

_MISSING = object()


@dataclass(frozen=True)
class ProjectPaths:
    """Where the dbt project and its artifacts are."""

    project_dir: Path
    target_path: Path
    profile_name: str | None
    model_paths: tuple[str, ...] = ("models",)
    """dbt_project.yml's ``model-paths``, relative to the project dir."""


@dataclass(frozen=True)
class Target:
    """The warehouse connection of one dbt target, rendered."""

    profile: str
    name: str
    type: str
    credentials: dict[str, Any]
    profiles_dir: Path


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}. Fix the file and retry.") from exc


def resolve_project(
    *, project_dir: Path | None, target_path: Path | None, env: Mapping[str, str]
) -> ProjectPaths:
    """The project dir (flag, ``DBT_PROJECT_DIR``, cwd) and target path, as in dbt."""
    pdir = project_dir or (Path(env["DBT_PROJECT_DIR"]) if env.get("DBT_PROJECT_DIR") else None)
    pdir = (pdir or Path.cwd()).resolve()
    project = _read_yaml(pdir / "dbt_project.yml")
    if project is not None and not isinstance(project, dict):
        raise ConfigError(f"{pdir / 'dbt_project.yml'} is not a mapping.")
    project = project or {}
    tpath = target_path or (Path(env["DBT_TARGET_PATH"]) if env.get("DBT_TARGET_PATH") else None)
    tpath = tpath or Path(str(project.get("target-path", "target")))
    if not tpath.is_absolute():
        tpath = pdir / tpath
    profile = env.get("DBT_PROFILE") or project.get("profile")
    models = project.get("model-paths")
    model_paths = tuple(m for m in models if isinstance(m, str)) if isinstance(models, list) else ("models",)
    return ProjectPaths(project_dir=pdir, target_path=tpath, profile_name=profile, model_paths=model_paths)


def _env_var(env: Mapping[str, str]) -> Any:
    def env_var(name: str, default: Any = _MISSING) -> Any:
        if name in env:
            return env[name]
        if default is not _MISSING:
            return default
        raise ConfigError(
            f"profiles.yml needs the environment variable {name!r}, which is not set; "
            "export it or give env_var() a default."
        )

    return env_var


class _Native:
    """A value an ``as_number``/``as_bool``/``as_native`` filter asked to keep as is."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return str(self.value)


def _render(value: Any, jenv: Callable[[], NativeEnvironment]) -> Any:
    """Render Jinja in every string; text stays text unless a filter asks otherwise (as dbt).

    ``jenv`` makes the environment on first use: a profile without templates never imports Jinja.
    """
    if isinstance(value, dict):
        return {k: _render(v, jenv) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, jenv) for v in value]
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        template = jenv().from_string(value)
        parts = list(template.root_render_func(template.new_context()))
        if len(parts) == 1 and isinstance(parts[0], _Native):
            return parts[0].value
        return "".join(str(p) for p in parts)
    return value


def _as_number(value: Any) -> _Native:
    text = str(value).strip()
    try:
        return _Native(int(text))
    except ValueError:
        return _Native(float(text))


def _jinja(env: Mapping[str, str]) -> NativeEnvironment:
    # The native environment hands rendered values to _render unconverted, so an as_* filter's
    # value survives and everything else is joined as text.
    import jinja2
    from jinja2.nativetypes import NativeEnvironment

    jenv = NativeEnvironment(undefined=jinja2.StrictUndefined)
    jenv.globals["env_var"] = _env_var(env)
    jenv.filters["as_number"] = _as_number
    jenv.filters["as_bool"] = lambda v: _Native(str(v).strip().lower() in {"true", "1", "yes", "on"})
    jenv.filters["as_text"] = str
    jenv.filters["as_native"] = lambda v: _Native(yaml.safe_load(str(v)))
    return jenv


def resolve_target(
    paths: ProjectPaths,
    *,
    profiles_dir: Path | None,
    target: str | None,
    run_args: Mapping[str, Any],
    env: Mapping[str, str],
) -> Target:
    """Render the dbt target to read from.

    Order, as dbt: the flag, the environment (``DBT_PROFILES_DIR``, ``DBT_TARGET``), what the
    last ``dbt run`` used (run_results.json ``args``), the project dir, then ``~/.dbt``.
    """
    candidates: list[Path] = []
    if profiles_dir:
        candidates = [profiles_dir]
    elif env.get("DBT_PROFILES_DIR"):
        candidates = [Path(env["DBT_PROFILES_DIR"])]
    else:
        if run_args.get("profiles_dir"):
            candidates.append(Path(str(run_args["profiles_dir"])))
        candidates += [paths.project_dir, Path.home() / ".dbt"]
    pdir = next((c for c in candidates if (c / "profiles.yml").is_file()), None)
    if pdir is None:
        raise ConfigError(
            f"No profiles.yml found (looked in {', '.join(str(c) for c in candidates)}); "
            "pass --profiles-dir or set DBT_PROFILES_DIR."
        )
    profiles = _read_yaml(pdir / "profiles.yml")
    if not isinstance(profiles, dict):
        raise ConfigError(f"{pdir / 'profiles.yml'} is empty or not a mapping.")
    name = paths.profile_name
    if not name:
        raise ConfigError(
            f"No profile named in {paths.project_dir / 'dbt_project.yml'}; set `profile:` there "
            "or DBT_PROFILE."
        )
    profile = profiles.get(name)
    if not isinstance(profile, dict):
        raise ConfigError(
            f"Profile {name!r} is not in {pdir / 'profiles.yml'}; it has "
            f"{', '.join(k for k in profiles if k != 'config') or 'no profiles'}."
        )
    jenv = cache(lambda: _jinja(env))
    tname = target or env.get("DBT_TARGET") or run_args.get("target") or profile.get("target")
    tname = _render(tname, jenv) if isinstance(tname, str) else tname
    outputs = profile.get("outputs") or {}
    if not tname or tname not in outputs:
        raise ConfigError(
            f"Target {tname!r} is not in profile {name!r}; it has "
            f"{', '.join(outputs) or 'no outputs'}. Pass --target."
        )
    creds = _render(outputs[tname], jenv)
    if not isinstance(creds, dict) or "type" not in creds:
        raise ConfigError(f"Target {tname!r} of profile {name!r} has no `type`.")
    return Target(
        profile=name, name=str(tname), type=str(creds["type"]), credentials=creds, profiles_dir=pdir
    )
