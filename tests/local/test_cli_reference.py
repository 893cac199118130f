"""docs/cli.md against the jobs' own parsers (which import the jobs, torch included)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import re

from jobs import cli_reference

ROOT = Path(__file__).resolve().parents[2]
FIX = "python -m jobs.cli_reference"


def test_cli_reference_matches_the_parsers():
    expected = cli_reference.render()
    current = cli_reference.DOC_PATH.read_text() if cli_reference.DOC_PATH.exists() else ""
    assert current == expected, f"docs/cli.md disagrees with the jobs' parsers; run `{FIX}` to regenerate it"


def _documented_arguments(page: str) -> dict[str, str]:
    """prog -> the text of the first cells of its tables, read from the page (not from render())."""
    sections: dict[str, str] = {}
    prog = None
    for line in page.splitlines():
        heading = re.match(r"^#{2,3} `(python -m [^`]+)`$", line)
        if heading:
            prog = heading.group(1)
            sections[prog] = ""
        elif prog and line.startswith("| `"):
            sections[prog] += line.split("|")[1] + "\n"
    return sections


def test_every_flag_of_every_parser_is_in_the_reference():
    sections = _documented_arguments(cli_reference.DOC_PATH.read_text())
    missing = []
    for _job, parser in cli_reference.job_parsers():
        for prog, flag in cli_reference.parser_flags(parser):
            cells = sections.get(prog, "")
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", cells):
                missing.append(f"{prog} {flag}")
    assert not missing, f"docs/cli.md lacks {', '.join(missing)}; run `{FIX}`"


def test_every_job_with_a_parser_is_discovered():
    declared = {f"jobs.{p.stem}" for p in (ROOT / "jobs").glob("*.py")
                if re.search(r"^def build_parser\(", p.read_text(), re.MULTILINE)}
    found = {job for job, _ in cli_reference.job_parsers()}
    assert declared == found
    assert {"jobs.generate", "jobs.repick", "jobs.train", "jobs.evaluate", "jobs.reproduce", "jobs.tradeoff",
            "jobs.benchmark"} <= found


def test_defaults_the_parser_leaves_out_come_from_the_config_dataclasses():
    from jobs.generate import build_parser
    from mhgan_dist.run.config import JobConfig

    rows = {}
    for line in cli_reference.render().split("## `python -m jobs.repick`")[0].splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`--"):
            rows[cells[0].strip("`").split()[0]] = cells[1]
    config = JobConfig()
    checked = 0
    for action in build_parser()._actions:
        if action.default is not argparse.SUPPRESS or not action.option_strings:
            continue
        for section in dataclasses.fields(config):
            value = getattr(getattr(config, section.name), action.dest, "absent")
            if value != "absent" and value is not None and not isinstance(value, bool) and value != "":
                assert rows[action.option_strings[0]] == f"`{value}`", action.option_strings[0]
                checked += 1
    assert checked >= 15  # model, sampling, thinning and resource options with fixed defaults


def test_a_new_job_appears_with_defaults_from_its_config_dataclass(tmp_path, monkeypatch):
    import sys

    import jobs

    (tmp_path / "zz_demo.py").write_text(
        '"""A job that exists only in this test."""\n'
        "import argparse\nimport dataclasses\n\n\n"
        "@dataclasses.dataclass(frozen=True)\nclass DemoConfig:\n    ratio_epochs: int = 7\n\n\n"
        "CLI_CONFIG = DemoConfig\n\n\n"
        "def build_parser():\n"
        "    p = argparse.ArgumentParser(prog='python -m jobs.zz_demo', argument_default=argparse.SUPPRESS)\n"
        "    p.add_argument('--ratio-epochs', type=int, help='epochs of the ratio classifier')\n"
        "    p.add_argument('--plain', help='no default anywhere')\n"
        "    return p\n"
    )
    monkeypatch.setattr(jobs, "__path__", [*jobs.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "jobs.zz_demo", raising=False)
    try:
        parsers = cli_reference.job_parsers()
        assert parsers[-1][0] == "jobs.zz_demo"
        page = cli_reference.render(parsers)
    finally:
        sys.modules.pop("jobs.zz_demo", None)
    assert "- [`python -m jobs.zz_demo`](#python--m-jobszz_demo)" in page
    assert "## `python -m jobs.zz_demo`" in page
    assert "| `--ratio-epochs RATIO_EPOCHS` | `7` | epochs of the ratio classifier |" in page
    assert "| `--plain PLAIN` | — | no default anywhere |" in page
