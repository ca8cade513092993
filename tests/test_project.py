"""The project's set-up files agree with each other: README, CI, pyproject, environment.yml."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the README's first code block."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)\n(.*?)```", text, re.S)
    assert block, "the README must start with a code block of commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_commands_book_then_tests():
    text = (ROOT / "README.md").read_text()
    assert text.index("```") < text.index("\n## "), "the commands come before the first section"
    book, tests = readme_commands()
    assert "jupyter-book build ." in book and ".[book]" in book
    assert tests.endswith("pytest") and ".[test]" in tests


def test_ci_runs_the_readme_test_command_after_pinning_torch():
    ci = (ROOT / ".ci" / "run").read_text()
    _, tests = readme_commands()
    assert tests in ci.splitlines()
    assert ci.index("torch==2.13.0") < ci.index(tests)


def test_environment_yml_installs_this_project_with_both_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    extras = set(project["optional-dependencies"])
    installs = [line for line in pip_section if line.startswith("-e .[")]
    assert installs, "environment.yml must pip-install this project"
    assert set(installs[0][len("-e .["):-1].split(",")) == extras
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    minimum = project["requires-python"].removeprefix(">=")
    version = tuple(int(v) for v in python.split("=")[1].split("."))
    assert version >= tuple(int(v) for v in minimum.split("."))
    assert "pip" in env["dependencies"]


def test_torch_requirement_admits_the_cpu_build():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch>=2.3" in deps


def test_console_scripts_exist():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
