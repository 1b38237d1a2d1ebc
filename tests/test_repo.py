"""Repository-level checks: CI runs the README's test command; configs load."""

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
  text = (ROOT / "README.md").read_text()
  return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
  commands = _readme_commands()
  assert len(commands) >= 2, "README must open with the main-job and the test command"
  test_command = commands[1].split("&&")[-1].strip()
  assert test_command.startswith("python -m pytest")
  ci = (ROOT / ".ci" / "run").read_text()
  assert test_command in ci, f"CI does not run the README's test command {test_command!r}"


CONFIG_FILES = sorted(
    p for p in (ROOT / "experiments" / "configs").glob("*.py") if "def get_config" in p.read_text()
)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_every_shipped_config_builds(path):
  module = importlib.import_module(f"experiments.configs.{path.stem}")
  config = module.get_config()
  assert config.to_dict(), f"{path.name}: empty config"
  for variant in getattr(module, "VARIANTS", ()):
    assert module.get_config(variant).to_dict()
