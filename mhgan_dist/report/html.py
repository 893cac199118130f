"""report.html: one self-contained page (inline CSS, no scripts, no network) around the figures."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

__all__ = ["FigureRef", "render_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1320px;
       color: #222; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 9px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
tr.ref td { background: #fafafa; font-style: italic; }
figure { margin: 0.8em 0 1.4em; } figcaption { font-size: 0.88em; color: #555; max-width: 1100px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { background: #fff8e1; border-left: 4px solid #f0c36d; padding: 6px 12px; font-size: 0.9em; }
.muted { color: #666; font-size: 0.9em; } code { background: #f5f5f5; padding: 0 3px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.row.run figure { flex: 0 1 auto; max-width: 600px; }
"""


@dataclass(frozen=True)
class FigureRef:
    """A PNG of the report: file name (relative to report.html), caption, and its bytes."""

    name: str
    caption: str
    png: bytes


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.{digits}f}"
    return escape(str(value))


def _img(figure: FigureRef, inline: bool) -> str:
    if inline:
        source = "data:image/png;base64," + base64.b64encode(figure.png).decode()
    else:
        source = escape(figure.name)
    return (f'<figure><img src="{source}" alt="{escape(figure.caption)}">'
            f"<figcaption>{escape(figure.caption)}</figcaption></figure>")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1, classes: Sequence[str] = ()) -> str:
    head = "".join(f'<th class="l">{escape(h)}</th>' if i < left else f"<th>{escape(h)}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        css = f' class="{classes[r]}"' if r < len(classes) and classes[r] else ""
        cells = "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _quality_columns(kind: str) -> list[tuple[str, str, int]]:
    """(header, key, digits) of the quality columns for a kind of data."""
    if kind == "grid2d":
        return [("JS (nats)", "js_nats", 4), ("JS (bits)", "js_bits", 4), ("HQ share", "hq_share", 4),
                ("modes recovered", "modes_recovered", 0)]
    if kind == "mixture1d":
        return [("JS (nats)", "js_nats", 4), ("JS (bits)", "js_bits", 4), ("modes recovered", "modes_recovered", 0)]
    if kind == "image":
        return [("IS", "inception_score", 3), ("IS std", "inception_score_std", 3), ("FID", "fid", 3)]
    if kind == "fashion":
        return [("FID", "fid", 2), ("IS analogue", "inception_score", 3), ("precision", "precision", 3),
                ("recall", "recall", 3), ("density", "density", 3), ("coverage", "coverage", 3),
                ("class JS (bits)", "class_js_bits", 4), ("classes", "classes_recovered", 0), ("k-NN n", "knn_n", 0)]
    return []


def _quality_cell(quality: Mapping[str, Any], key: str, digits: int) -> str:
    """The value, with its bootstrap standard error when the quality carries spreads."""
    spread = (quality.get("spreads") or {}).get(key)
    if spread is None or key == "classes_recovered":
        return _fmt(quality.get(key), digits)
    return f"{_fmt(quality.get(key), digits)} ± {_fmt(spread['std'], digits)}"


def _seed_summary_html(report: Mapping[str, Any]) -> list[str]:
    summary = report.get("seed_summary") or []
    if not summary or max(len(row["seeds"]) for row in summary) < 2:
        return []
    names = [("FID", "fid", 2), ("IS analogue", "inception_score", 3), ("precision", "precision", 3),
             ("recall", "recall", 3), ("density", "density", 3), ("coverage", "coverage", 3),
             ("class JS (bits)", "class_js_bits", 4), ("classes", "classes_recovered", 1)]
    rows = []
    for row in summary:
        cells = [f"{_fmt(row['metrics'][k]['value'], d)} ± {_fmt(row['metrics'][k]['std'], d)}" for _, k, d in names]
        rows.append([escape(row["label"]), _fmt(len(row["seeds"])), escape(", ".join(f"{n:,}" for n in row["num_samples"])),
                     *cells])
    return ["<h2>Over seeds</h2>",
            '<p class="muted">Runs grouped by method; each figure as mean ± sample standard deviation over the run '
            "seeds.</p>",
            _table(["method", "seeds", "samples", *[n[0] for n in names]], rows)]


def _class_table_html(report: Mapping[str, Any]) -> list[str]:
    names = report.get("class_names")
    if not names:
        return []
    rows = []
    entries = [(run["label"], run.get("quality")) for run in report["runs"]]
    real = report.get("real") or {}
    if real.get("quality"):
        entries.append(("real (held out)", real["quality"]))
    for label, quality in entries:
        if not quality or "class_counts" not in quality:
            continue
        total = sum(quality["class_counts"]) or 1
        rows.append([escape(label), *[_fmt(c / total, 3) for c in quality["class_counts"]]])
    return ["<h3>Class mix (share of samples per class; uniform = 0.100)</h3>",
            _table(["run", *[str(n) for n in names]], rows)]


def render_html(report: Mapping[str, Any], sample_figures: Sequence[FigureRef],
                run_figures: Mapping[str, Sequence[FigureRef]], inline: bool = False) -> str:
    """The page for ``report`` (report.json's content) with its figures, as UTF-8 text."""
    kind = report["kind"]
    runs = report["runs"]
    real = report.get("real")
    parts: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(report['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(report['title'])}</h1>",
        f'<p class="muted">{escape(report["subtitle"])}</p>',
    ]
    for note in report.get("notes", []):
        parts.append(f'<p class="note">{escape(note)}</p>')

    columns = _quality_columns(kind)
    header = ["run", "picker", "K", "calibration", "seed", "samples", *[c[0] for c in columns],
              "acceptance", "restarts", "Dawid Z before → after"]
    rows, classes = [], []
    for run in runs:
        quality = run.get("quality") or {}
        chains, cal = run["chains"], run["calibration"]
        z = f"{_fmt(cal['before'].get('dawid_z'), 2)} → {_fmt(cal['after'].get('dawid_z'), 2)}"
        rows.append([escape(run["label"]), escape(run["picker"]), _fmt(run["chain_length"]),
                     escape(run["calibration_method"]), _fmt(run["seed"]), _fmt(run["num_samples"]),
                     *[_quality_cell(quality, key, digits) for _, key, digits in columns],
                     _fmt(chains.get("acceptance_rate"), 3), _fmt(chains.get("restart_rate"), 3), z])
        classes.append("")
    if real is not None and real.get("quality"):
        quality = real["quality"]
        rows.append(["real (held out)", "–", "–", "–", "–", _fmt(real["num_samples"]),
                     *[_quality_cell(quality, key, digits) for _, key, digits in columns], "–", "–", "–"])
        classes.append("ref")
    parts += ["<h2>Summary</h2>", _table(header, rows, left=5, classes=classes)]
    for line in report.get("definitions", []):
        parts.append(f'<p class="muted">{escape(line)}</p>')
    parts += _class_table_html(report)
    parts += _seed_summary_html(report)

    parts.append("<h2>Samples</h2>")
    parts.append('<div class="row">' + "".join(_img(f, inline) for f in sample_figures) + "</div>")

    for run in runs:
        cal = run["calibration"]
        parts.append(f"<h2>Run: {escape(run['label'])}</h2>")
        # The storage location is only a tooltip: it is where the run happened to be written (often a temporary
        # folder), not what the reader needs; report.json keeps it as "uri".
        name, uri = run.get("name") or run["label"], run.get("uri", "")
        parts.append(f'<p class="muted">run <code title="{escape(uri)}">{escape(name)}</code> — run id '
                     f'{escape(str(run.get("run_id")))}</p>')
        for note in run.get("notes", []):
            parts.append(f'<p class="note">{escape(note)}</p>')
        metric_names = [("Dawid's Z", "dawid_z", 3), ("ECE", "ece", 4), ("Brier", "brier", 4), ("log loss (nats)", "log_loss", 4)]
        cal_rows = [[escape(stage)] + [_fmt(cal[stage].get(key), d) for _, key, d in metric_names]
                    for stage in ("before", "after")]
        parts.append("<h3>Calibration (held-out real vs generated, cross-fitted)</h3>")
        parts.append(_table(["", *[m[0] for m in metric_names]], cal_rows))
        chains = run["chains"]
        parts.append("<h3>Chains</h3>")
        parts.append(_table(
            ["acceptance rate", "restart rate", "mean accepts per chain", "chains with an accept", "chains loaded"],
            [[_fmt(chains.get("acceptance_rate"), 4), _fmt(chains.get("restart_rate"), 4),
              _fmt(chains.get("mean_accepts_per_chain"), 2), _fmt(chains.get("chains_with_an_accept"), 4),
              _fmt(chains.get("chains_loaded"))]], left=0))
        parts.append('<div class="row run">' + "".join(_img(f, inline) for f in run_figures.get(run["label"], []))
                     + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
