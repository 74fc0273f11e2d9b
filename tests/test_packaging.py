"""The packaging files agree with each other and with what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    """Distribution name of a requirement string, normalised (PEP 503)."""
    name = re.split(r"[\[<>=!~; ]", req.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
    return {_name(r): r for r in reqs}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for r in dep.get("pip", []):
                if not r.startswith("-e"):
                    out[_name(r)] = r
        elif not _name(dep) in ("python", "pip"):
            out[_name(dep)] = dep
    return out


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert sorted(py) == sorted(env)
    # Lower bounds agree too (conda spells them the same way as pip here).
    for name, req in py.items():
        bound = re.search(r">=\s*([\w.]+)", req)
        if bound:
            assert f">={bound.group(1)}" in env[name].replace(" ", ""), (name, req, env[name])


def test_constraints_pin_the_cpu_torch_pair():
    pins = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins == {"torch": "2.13.0", "torchvision": "0.28.0"}


def test_ci_runs_exactly_the_readme_test_command():
    readme_head = (ROOT / "README.md").read_text().splitlines()[:6]
    commands = [ln.split("#")[0].strip() for ln in readme_head if ln.startswith("make ")]
    assert commands[:2] == ["make demo", "make test"]
    ci = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()
          if ln.strip() and not ln.startswith("#") and not ln.startswith(("set ", "cd "))]
    assert ci == ["make test"]


def test_torchvision_imports_through_the_guard_only():
    offenders = []
    for pkg in ("kpid_core", "sweeps", "analysis", "bench"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "_tv.py":
                continue
            for line in path.read_text().splitlines():
                if re.match(r"\s*(import torchvision|from torchvision)", line):
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders
