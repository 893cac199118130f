"""The promises the repository itself makes: the README's commands and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The README's two quick-start commands, word for word: a newcomer copies them, and CI runs the second.
GENERATE_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && "
    ".venv/bin/python -m jobs.generate --num-samples 2000 --output runs/quickstart"
)
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest -q"


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_quick_start_has_two_self_contained_commands():
    generate, tests = _quick_start_commands()
    for command in (generate, tests):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert "-m jobs.generate" in generate and "-m pytest" in tests


def test_readme_quick_start_commands_are_unchanged():
    assert _quick_start_commands() == [GENERATE_COMMAND, TEST_COMMAND]


def test_ci_runs_exactly_the_readme_test_command():
    _, tests = _quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == tests


def test_generate_quick_start_flags_are_real():
    from jobs.generate import parse_job_config

    generate, _ = _quick_start_commands()
    argv = generate.split("-m jobs.generate", 1)[1].split()
    config, _ = parse_job_config(argv)
    assert config.model.model == "grid2d" and config.output.output
