"""Finding the dbt project and rendering its target the way dbt does, without importing dbt."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from heap_dbt.errors import ConfigError
from heap_dbt.profiles import ProjectPaths, Target, resolve_project, resolve_target


def write_profiles(directory: Path, outputs: dict[str, Any] | None = None, *, target: str = "dev") -> Path:
    """A profiles.yml for profile ``demo`` whose dev output records where it came from."""
    directory.mkdir(parents=True, exist_ok=True)
    outputs = outputs or {"dev": {"type": "duckdb", "path": f"{directory.name}.duckdb"}}
    (directory / "profiles.yml").write_text(
        yaml.safe_dump(
            {"demo": {"target": target, "outputs": outputs}, "config": {"send_anonymous_usage_stats": False}},
            sort_keys=False,
        )
    )
    return directory


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake HOME, so ~/.dbt is ours and empty unless a test fills it."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture
def project(tmp_path: Path) -> ProjectPaths:
    pdir = tmp_path / "project"
    pdir.mkdir()
    (pdir / "dbt_project.yml").write_text("name: demo\nprofile: demo\n")
    return resolve_project(project_dir=pdir, target_path=None, env={})


def target(
    paths: ProjectPaths,
    *,
    profiles_dir: Path | None = None,
    name: str | None = None,
    run_args: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Target:
    return resolve_target(
        paths, profiles_dir=profiles_dir, target=name, run_args=run_args or {}, env=env or {}
    )


# --- resolve_project -------------------------------------------------------------------------------


def test_project_paths_from_the_flag(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: demo\nprofile: demo\ntarget-path: build\n")
    paths = resolve_project(project_dir=tmp_path, target_path=None, env={})
    assert paths == ProjectPaths(tmp_path.resolve(), tmp_path.resolve() / "build", "demo")


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        pytest.param(None, {}, "target", id="default"),
        pytest.param(None, {"DBT_TARGET_PATH": "from_env"}, "from_env", id="env"),
        pytest.param(Path("from_flag"), {"DBT_TARGET_PATH": "from_env"}, "from_flag", id="flag-wins"),
    ],
)
def test_target_path(tmp_path: Path, flag: Path | None, env: dict[str, str], expected: str) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: demo\n")
    paths = resolve_project(project_dir=None, target_path=flag, env={"DBT_PROJECT_DIR": str(tmp_path), **env})
    assert paths.target_path == tmp_path.resolve() / expected


def test_profile_name_from_env_wins(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: demo\nprofile: demo\n")
    paths = resolve_project(project_dir=tmp_path, target_path=None, env={"DBT_PROFILE": "other"})
    assert paths.profile_name == "other"


def test_project_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"dbt_project\.yml is not a mapping"):
        resolve_project(project_dir=tmp_path, target_path=None, env={})


def test_project_file_that_is_not_yaml(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        resolve_project(project_dir=tmp_path, target_path=None, env={})


# --- where profiles.yml is found -------------------------------------------------------------------


@pytest.fixture
def everywhere(tmp_path: Path, home: Path, project: ProjectPaths) -> dict[str, Path]:
    """A profiles.yml in every place dbt looks."""
    return {
        "flag": write_profiles(tmp_path / "flag"),
        "env": write_profiles(tmp_path / "env"),
        "run_args": write_profiles(tmp_path / "run_args"),
        "project": write_profiles(project.project_dir),
        "home": write_profiles(home / ".dbt"),
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({"flag", "env", "run_args"}, "flag", id="flag-first"),
        pytest.param({"env", "run_args"}, "env", id="then-DBT_PROFILES_DIR"),
        pytest.param({"run_args"}, "run_args", id="then-last-dbt-run"),
        pytest.param(set(), "project", id="then-project-dir"),
    ],
)
def test_profiles_dir_order(
    everywhere: dict[str, Path], project: ProjectPaths, given: set[str], expected: str
) -> None:
    t = target(
        project,
        profiles_dir=everywhere["flag"] if "flag" in given else None,
        env={"DBT_PROFILES_DIR": str(everywhere["env"])} if "env" in given else {},
        run_args={"profiles_dir": str(everywhere["run_args"])} if "run_args" in given else {},
    )
    assert t.profiles_dir == everywhere[expected]
    assert t.credentials["path"] == f"{everywhere[expected].name}.duckdb"


def test_profiles_dir_falls_back_to_home(home: Path, project: ProjectPaths) -> None:
    write_profiles(home / ".dbt")
    assert target(project).profiles_dir == home / ".dbt"


def test_run_args_dir_without_profiles_falls_through(
    tmp_path: Path, home: Path, project: ProjectPaths
) -> None:
    write_profiles(home / ".dbt")
    t = target(project, run_args={"profiles_dir": str(tmp_path / "gone")})
    assert t.profiles_dir == home / ".dbt"


@pytest.mark.parametrize(
    "where",
    [
        pytest.param({"profiles_dir": "flag"}, id="flag"),
        pytest.param({"env": "DBT_PROFILES_DIR"}, id="env"),
    ],
)
def test_explicit_dir_without_profiles_does_not_fall_back(
    tmp_path: Path, home: Path, project: ProjectPaths, where: dict[str, str]
) -> None:
    write_profiles(home / ".dbt")
    empty = tmp_path / "empty"
    empty.mkdir()
    kwargs: dict[str, Any] = (
        {"profiles_dir": empty} if "profiles_dir" in where else {"env": {"DBT_PROFILES_DIR": str(empty)}}
    )
    with pytest.raises(ConfigError, match=f"No profiles.yml found \\(looked in {empty}\\)"):
        target(project, **kwargs)


def test_no_profiles_anywhere_lists_where_it_looked(home: Path, project: ProjectPaths) -> None:
    with pytest.raises(ConfigError) as info:
        target(project)
    message = str(info.value)
    assert str(project.project_dir) in message
    assert str(home / ".dbt") in message
    assert "--profiles-dir" in message


# --- rendering -----------------------------------------------------------------------------------


def rendered(project: ProjectPaths, output: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    write_profiles(project.project_dir, {"dev": {"type": "duckdb", **output}})
    return target(project, env=env).credentials


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        pytest.param("{{ env_var('DB_PATH') }}", {"DB_PATH": "/data/x.duckdb"}, "/data/x.duckdb", id="set"),
        pytest.param("{{ env_var('DB_PATH', 'fallback.duckdb') }}", {}, "fallback.duckdb", id="default-used"),
        pytest.param(
            "{{ env_var('DB_PATH', 'fallback.duckdb') }}",
            {"DB_PATH": "set.duckdb"},
            "set.duckdb",
            id="default-unused",
        ),
        pytest.param("{{ env_var('DB_PATH', '') }}", {}, "", id="empty-default"),
        pytest.param(
            "dir/{{ env_var('NAME') }}.duckdb", {"NAME": "prod"}, "dir/prod.duckdb", id="inside-text"
        ),
        pytest.param("{{ env_var('PORT') }}", {"PORT": "5432"}, "5432", id="text-stays-text"),
        pytest.param("{{ env_var('PORT') | as_number }}", {"PORT": "5432"}, 5432, id="as_number"),
        pytest.param("{{ env_var('FLAG') | as_bool }}", {"FLAG": "True"}, True, id="as_bool"),
        pytest.param("plain", {}, "plain", id="no-template"),
    ],
)
def test_env_var_rendering(
    project: ProjectPaths, home: Path, value: str, env: dict[str, str], expected: Any
) -> None:
    assert rendered(project, {"path": value}, env)["path"] == expected


def test_nested_values_are_rendered(project: ProjectPaths, home: Path) -> None:
    creds = rendered(
        project,
        {
            "path": "x.duckdb",
            "attach": [{"path": "{{ env_var('A') }}", "alias": "a"}],
            "settings": {"k": "{{ env_var('K') }}"},
        },
        {"A": "/a.duckdb", "K": "v"},
    )
    assert creds["attach"] == [{"path": "/a.duckdb", "alias": "a"}]
    assert creds["settings"] == {"k": "v"}


def test_missing_env_var_names_it(project: ProjectPaths, home: Path) -> None:
    with pytest.raises(ConfigError, match="needs the environment variable 'HEAP_DB_PATH', which is not set"):
        rendered(project, {"path": "{{ env_var('HEAP_DB_PATH') }}"}, {})


def test_env_var_reads_the_given_env_not_the_process_env(
    project: ProjectPaths, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PATH", "from-process")
    with pytest.raises(ConfigError, match="'DB_PATH'"):
        rendered(project, {"path": "{{ env_var('DB_PATH') }}"}, {})


@pytest.mark.parametrize("value", ["12345", "yes"], ids=["digits", "yaml-bool"])
def test_as_text_keeps_a_string(project: ProjectPaths, home: Path, value: str) -> None:
    creds = rendered(
        project, {"path": "x.duckdb", "password": "{{ env_var('PW') | as_text }}"}, {"PW": value}
    )
    assert creds["password"] == value


@pytest.mark.parametrize("value", ["0123", "12:30", "on"], ids=["leading-zero", "sexagesimal", "on"])
def test_env_var_text_that_is_not_a_python_literal_stays_text(
    project: ProjectPaths, home: Path, value: str
) -> None:
    creds = rendered(project, {"path": "x.duckdb", "schema": "{{ env_var('S') }}"}, {"S": value})
    assert creds["schema"] == value


# --- which target ---------------------------------------------------------------------------------

OUTPUTS = {
    "dev": {"type": "duckdb", "path": "dev.duckdb"},
    "prod": {"type": "duckdb", "path": "prod.duckdb"},
    "ci": {"type": "duckdb", "path": "ci.duckdb"},
}


@pytest.mark.parametrize(
    ("flag", "env", "run_args", "expected"),
    [
        pytest.param("prod", {"DBT_TARGET": "ci"}, {"target": "ci"}, "prod", id="flag"),
        pytest.param(None, {"DBT_TARGET": "ci"}, {"target": "prod"}, "ci", id="env"),
        pytest.param(None, {}, {"target": "prod"}, "prod", id="last-dbt-run"),
        pytest.param(None, {}, {}, "dev", id="profile-default"),
    ],
)
def test_target_choice(
    project: ProjectPaths,
    home: Path,
    flag: str | None,
    env: dict[str, str],
    run_args: dict[str, Any],
    expected: str,
) -> None:
    write_profiles(project.project_dir, OUTPUTS)
    t = target(project, name=flag, env=env, run_args=run_args)
    assert (t.profile, t.name, t.type, t.credentials["path"]) == (
        "demo",
        expected,
        "duckdb",
        f"{expected}.duckdb",
    )


def test_profile_default_target_may_be_templated(project: ProjectPaths, home: Path) -> None:
    write_profiles(project.project_dir, OUTPUTS, target="{{ env_var('WHERE', 'ci') }}")
    assert target(project).name == "ci"
    assert target(project, env={"WHERE": "prod"}).name == "prod"


def test_unknown_target_lists_the_targets(project: ProjectPaths, home: Path) -> None:
    write_profiles(project.project_dir, OUTPUTS)
    with pytest.raises(
        ConfigError,
        match=re.escape("Target 'staging' is not in profile 'demo'; it has dev, prod, ci. Pass --target."),
    ):
        target(project, name="staging")


def test_unknown_profile_lists_the_profiles(tmp_path: Path, home: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: demo\nprofile: nope\n")
    paths = resolve_project(project_dir=tmp_path, target_path=None, env={})
    write_profiles(tmp_path)
    with pytest.raises(ConfigError, match=r"Profile 'nope' is not in .*profiles\.yml; it has demo\.$"):
        target(paths)


def test_no_profile_named_in_the_project(tmp_path: Path, home: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: demo\n")
    paths = resolve_project(project_dir=tmp_path, target_path=None, env={})
    write_profiles(tmp_path)
    with pytest.raises(ConfigError, match=r"No profile named in .*dbt_project\.yml"):
        target(paths)


def test_output_without_type_is_reported(project: ProjectPaths, home: Path) -> None:
    write_profiles(project.project_dir, {"dev": {"path": "x.duckdb"}})
    with pytest.raises(ConfigError, match="Target 'dev' of profile 'demo' has no `type`"):
        target(project)


@pytest.mark.parametrize("content", ["", "- a\n"], ids=["empty", "a-list"])
def test_profiles_file_that_is_not_a_mapping(project: ProjectPaths, home: Path, content: str) -> None:
    (project.project_dir / "profiles.yml").write_text(content)
    with pytest.raises(ConfigError, match=r"profiles\.yml is empty or not a mapping"):
        target(project)


# --- Jinja only when the profile has templates -----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "imports_jinja"),
    [("plain.duckdb", False), ("{{ env_var('DB_NAME', 'x') }}.duckdb", True)],
    ids=["plain", "templated"],
)
def test_jinja_is_imported_only_for_a_templated_profile(
    project: ProjectPaths, tmp_path: Path, path: str, imports_jinja: bool
) -> None:
    """Importing Jinja costs ~20 ms and ~8 MB of every sync; a plain profile does without it."""
    write_profiles(tmp_path / "p", {"dev": {"type": "duckdb", "path": path}})
    script = "\n".join(
        [
            "import sys; from pathlib import Path; from heap_dbt import profiles",
            f"paths = profiles.resolve_project(project_dir=Path({str(project.project_dir)!r}), "
            "target_path=None, env={})",
            f"t = profiles.resolve_target(paths, profiles_dir=Path({str(tmp_path / 'p')!r}), "
            "target=None, run_args={}, env={})",
            "print(t.credentials['path'], 'jinja2' in sys.modules)",
        ]
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == [path.replace("{{ env_var('DB_NAME', 'x') }}", "x"), str(imports_jinja)]
