"""The documentation's promises: links resolve, anchors exist, the CLI reference matches the parsers."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs import cli_reference

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FIX = "python -m jobs.cli_reference"

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*\"([^\"]+)\"", re.IGNORECASE)
_HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:id|name)\s*=\s*\"([^\"]+)\"", re.IGNORECASE)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> Iterator[str]:
    """The lines outside fenced code blocks (headings and links there are not headings or links)."""
    fence = None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match:
            fence = None if fence == match.group(1) else (fence or match.group(1))
            continue
        if fence is None:
            yield line


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger): the rendered text lower-cased,
    everything but letters, digits, underscores, hyphens and spaces dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every `#fragment` a link into ``path`` may use: heading slugs (duplicates get -1, -2, ...)
    and explicit <a id/name> anchors."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _prose_lines(path.read_text()):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Targets of Markdown links and images, and of HTML <a href> and <img src>, outside code."""
    out = []
    for line in _prose_lines(path.read_text()):
        line = _INLINE_CODE.sub("", line)
        out += _MD_LINK.findall(line) + _HTML_LINK.findall(line)
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """One sentence per relative link of ``path`` that names no file or directory of the repository,
    or an anchor its target does not have."""
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if root.resolve() not in (dest, *dest.parents):
            problems.append(f"{path.name}: {target} points outside the repository")
        elif not dest.exists():
            problems.append(f"{path.name}: {target} names no file")
        elif fragment:
            if dest.suffix != ".md":
                problems.append(f"{path.name}: {target} has an anchor, but {dest.name} is not Markdown")
            elif fragment not in anchors(dest):
                problems.append(f"{path.name}: {target} names no heading of {dest.name}")
    return problems


# ------------------------------------------------------------------ the checker itself


@pytest.mark.parametrize("heading, slug", [
    # Slugs as GitHub renders them for headings of this repository's pages.
    ("Metrics (`mhgan_dist/quality/metrics.py`, numpy only)", "metrics-mhgan_distqualitymetricspy-numpy-only"),
    ("The paper's toy experiments, reproduced", "the-papers-toy-experiments-reproduced"),
    ("Quality against chain length K (shipped grid2d, mean ± sd over 3 seeds, 10,000 samples)",
     "quality-against-chain-length-k-shipped-grid2d-mean--sd-over-3-seeds-10000-samples"),
    ("`python -m jobs.generate`", "python--m-jobsgenerate"),
    ("Re-runs, resume and determinism", "re-runs-resume-and-determinism"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_the_checker_finds_broken_links_and_anchors_and_ignores_code(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## Part\n\n## Part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Here\n\n[ok](other.md#part-1) [ok](#here) ![ok](other.md) [web](https://example.com/x)\n"
        "[gone](missing.md) [bad anchor](other.md#part-2) [bad local](#nowhere)\n"
        "`[not a link](missing-in-code.md)`\n```\n[nor this](missing-in-fence.md)\n# not a heading\n```\n"
        '<img src="missing.png"> [out](../../etc/passwd)\n'
    )
    problems = broken_links(page, root=tmp_path)
    assert sorted(problems) == sorted([
        "page.md: missing.md names no file",
        "page.md: other.md#part-2 names no heading of other.md",
        "page.md: #nowhere names no heading of page.md",
        "page.md: missing.png names no file",
        "page.md: ../../etc/passwd points outside the repository",
    ])


# ------------------------------------------------------------------ the pages


def test_docs_pages_exist_and_say_whom_they_are_for():
    names = {p.name for p in DOCS}
    for name in ("method.md", "cli.md", "running-at-scale.md", "models.md", "sample-quality.md", "cost.md",
                 "performance.md", "output.md", "architecture.md"):
        assert name in names, f"docs/{name} is missing"
    for page in DOCS[1:]:
        first_paragraph = page.read_text().split("\n\n")[1]
        assert first_paragraph.startswith("For: "), f"{page.name} does not open by saying whom it is for"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_image_resolves(page):
    problems = broken_links(page)
    assert not problems, "; ".join(problems)


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    images = [t for t in links(ROOT / "README.md") if t.endswith(".png")]
    assert images, "the README shows no picture"
    linked = {t.split("#")[0] for t in links(ROOT / "README.md")}
    for page in DOCS[1:]:
        assert f"docs/{page.name}" in linked, f"the README's map does not link docs/{page.name}"


# ------------------------------------------------------------------ the command-line reference


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
