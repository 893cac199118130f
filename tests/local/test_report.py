"""The report a run makes with `jobs.generate --report`: its files, its HTML, and how a browser shows it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from jobs import evaluate, generate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# matplotlib's default blue (#1f77b4), used for samples and chains in the figures and nowhere in the page's CSS.
FIGURE_BLUE = np.array([31, 119, 180])


class _Page(HTMLParser):
    """Collects image sources, links, visible text, code tooltips and the tag structure of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.open: list[str] = []
        self.unbalanced: list[str] = []
        self.text: list[str] = []  # what a reader sees: element text, not attributes or CSS
        self.tooltips: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src", ""))
        elif tag in ("a", "link", "script"):
            self.links.append(attributes.get("href") or attributes.get("src") or "")
        if tag == "code" and "title" in attributes:
            self.tooltips.append(attributes["title"])
        if tag not in ("img", "meta", "br", "link"):
            self.open.append(tag)

    def handle_data(self, data):
        if "style" not in self.open:
            self.text.append(data)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.unbalanced.append(tag)
        else:
            self.open.pop()


@pytest.fixture(scope="module")
def run_with_report(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    args = ["--model", "grid2d", "--num-samples", "300", "--chain-length", "32", "--output", str(out), "--quiet",
            "--report"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert generate.main(args) == 0
    return out, args, printed.getvalue()


def test_generate_report_flag_writes_the_report(run_with_report):
    out, args, printed = run_with_report
    assert f"report: {out / 'report' / 'report.html'}" in printed
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["format"] == "mhgan-dist report" and report["runs"][0]["picker"] == "mh"
    # --report is not part of the run's identity: the same command again finds the run complete.
    assert generate.main(args) == 0


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_html_parses_and_references_existing_pngs_only(run_with_report):
    out, _, _ = run_with_report
    html = out / "report" / "report.html"
    page = parse(html)
    assert page.unbalanced == [] and page.open == []
    assert page.links == []  # no scripts, stylesheets or links: nothing to fetch
    assert len(page.images) >= 4
    for source in page.images:
        assert "/" not in source and source.endswith(".png")  # relative, next to report.html
        assert (html.parent / source).read_bytes()[:8] == PNG_MAGIC
    listed = {f["file"] for f in json.loads((out / "report" / "report.json").read_text())["figures"]}
    assert set(page.images) == listed


def test_inline_figures_embed_the_pngs(run_with_report, tmp_path):
    out, _, _ = run_with_report
    assert evaluate.main([str(out), "--output", str(tmp_path), "--inline-figures", "--quiet"]) == 0
    page = parse(tmp_path / "report.html")
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)


def test_the_page_calls_the_run_by_its_folder_name_not_where_it_was_written(run_with_report):
    out, _, _ = run_with_report
    page = parse(out / "report" / "report.html")
    text = "\n".join(page.text)
    assert "run" in page.text  # the name, alone in its <code>
    assert str(out) not in text and str(out.parent) not in text and tempfile.gettempdir() not in text
    assert page.tooltips == [str(out)]  # where it is stored: only on hover
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["runs"][0]["name"] == "run" and report["runs"][0]["uri"] == str(out)


def test_evaluate_name_flag_names_the_runs(run_with_report, tmp_path, capsys):
    out, _, _ = run_with_report
    assert evaluate.main([str(out), "--output", str(tmp_path), "--name", "nightly grid", "--quiet"]) == 0
    page = parse(tmp_path / "report.html")
    assert "nightly grid" in page.text and str(out) not in "\n".join(page.text)
    assert json.loads((tmp_path / "report.json").read_text())["runs"][0]["name"] == "nightly grid"
    capsys.readouterr()
    assert evaluate.main([str(out), "--output", str(tmp_path / "two"), "--name", "a", "--name", "b"]) == 2
    assert "give one --name per run: 2 name(s) for 1 run(s)" in capsys.readouterr().err


def test_run_names_are_folder_names_with_parents_only_where_needed():
    from mhgan_dist.report import run_names

    assert run_names(["/tmp/x1/runs/mh", "/tmp/x1/runs/base", "/tmp/x1/runs/drs/"]) == ["mh", "base", "drs"]
    assert run_names(["/w/seed-0/base", "/w/seed-1/base", "/w/seed-0/mh"]) == ["seed-0/base", "seed-1/base",
                                                                            "seed-0/mh"]
    assert run_names(["bucket/nightly/2026-12-02", "other/nightly/2026-12-02"]) == ["bucket/nightly/2026-12-02",
                                                                                  "other/nightly/2026-12-02"]
    assert run_names(["/a/mh", "/a/mh"]) == ["a/mh #1", "a/mh #2"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_the_report_renders_in_headless_chromium_with_its_figures(run_with_report, tmp_path):
    from matplotlib.image import imread

    out, _, _ = run_with_report
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--screenshot={shot}", "--window-size=1400,2400",
             (out / "report" / "report.html").as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = (imread(shot)[:, :, :3] * 255).round()
    assert pixels.shape[:2] == (2400, 1400)
    # The figures' blue shows only when the browser loaded the PNGs the page references.
    blue = np.all(np.abs(pixels - FIGURE_BLUE) <= 12, axis=2)
    assert blue.sum() > 500


def test_run_labels_name_what_differs():
    from types import SimpleNamespace

    from mhgan_dist.report import run_labels

    def run(picker, method="isotonic", k=640, seed=0, thin=None):
        return SimpleNamespace(picker=picker, calibration_method=method, chain_length=k, seed=seed, thin=thin)

    assert run_labels([run("base"), run("drs"), run("mh")]) == ["base", "drs", "mh"]
    assert run_labels([run("mh", "none"), run("mh")]) == ["mh raw", "mh"]
    assert run_labels([run("mh", k=10), run("mh", k=640)]) == ["mh K=10", "mh K=640"]
    assert run_labels([run("mh"), run("mh")]) == ["mh #1", "mh #2"]
    assert run_labels([run("mh", thin=8), run("mh")]) == ["mh T=8", "mh K=640"]


def test_grid_table_puts_the_papers_values_beside_the_spread_over_seeds():
    from mhgan_dist.report.paper import grid_table, summarise

    rows = [{"epoch": 150, "seed": s, "method": "mh", "js_nats": v, "js_bits": v / np.log(2), "hq_share": 0.99,
             "modes_recovered": 25} for s, v in enumerate([0.01, 0.02, 0.03])]
    table = grid_table(rows)
    assert "| 150 | MH-GAN, calibrated | 0.0200 ± 0.0100 |" in table and table.rstrip().endswith("| 0.017 | 0.995 |")
    assert summarise([1.0]).text() == "1.000" and summarise([1.0, 3.0]).std == pytest.approx(np.sqrt(2))


def _fashion_entry(picker, method, seed, fid, rng):
    counts = rng.multinomial(1000, np.full(10, 0.1)).tolist()
    quality = {"n": 1000, "knn_n": 1000, "knn_k": 5, "fid": fid, "inception_score": 8.0, "precision": 0.7,
               "recall": 0.6, "density": 0.9, "coverage": 0.8, "class_js_bits": 0.01, "classes_recovered": 10,
               "class_counts": counts, "spreads": {}}
    return {"label": f"{picker} {method} seed={seed}", "picker": picker, "calibration_method": method, "seed": seed,
            "chain_length": 64, "thin": None, "num_samples": 1000, "quality": quality, "uri": "x", "run_id": "r",
            "total_samples": 1000, "notes": [],
            "chains": {"acceptance_rate": 0.2}, "calibration": {"before": {}, "after": {}}}


def test_seed_summary_groups_methods_and_gives_mean_and_sample_std_over_seeds():
    from mhgan_dist.report.build import seed_summary, seed_table_markdown
    from mhgan_dist.report.html import render_html

    rng = np.random.default_rng(0)
    fids = {("base", "isotonic"): [10.0, 12.0, 14.0], ("mh", "isotonic"): [8.0, 9.0, 13.0], ("mh", "none"): [7.0, 7.0, 7.0]}
    entries = [_fashion_entry(p, m, s, fid, rng) for (p, m), values in fids.items() for s, fid in enumerate(values)]
    summary = seed_summary(entries)
    assert [row["label"] for row in summary] == ["base", "mh", "mh raw D"]
    for row, values in zip(summary, fids.values(), strict=True):
        assert row["seeds"] == [0, 1, 2]
        assert row["metrics"]["fid"]["value"] == pytest.approx(np.mean(values))
        assert row["metrics"]["fid"]["std"] == pytest.approx(np.std(values, ddof=1))
    mh_counts = np.array([e["quality"]["class_counts"] for e in entries if e["label"].startswith("mh isotonic")])
    np.testing.assert_allclose(summary[1]["class_shares"], (mh_counts / 1000).mean(axis=0))
    report = {"kind": "fashion", "runs": entries, "real": None, "title": "t", "subtitle": "s", "notes": [],
              "seed_summary": summary, "class_names": [f"c{i}" for i in range(10)], "definitions": []}
    table = seed_table_markdown(report)
    assert "| base | 3 | 1,000 | 12.00 ± 2.00 |" in table and "| mh raw D | 3 | 1,000 | 7.00 ± 0.00 |" in table
    page = _Page()
    page.feed(render_html(report, [], {}))
    page.close()
    assert page.unbalanced == [] and page.open == []
