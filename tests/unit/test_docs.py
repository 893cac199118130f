"""The documentation's promises: links resolve, anchors exist, the CLI reference matches the parsers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

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
