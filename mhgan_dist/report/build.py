"""Evaluate one or more finished runs and write ``report/``: report.json, report.html, PNG figures."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mhgan_dist.core import calibrators
from mhgan_dist.training import datasets
from mhgan_dist.errors import ConfigError, InputError
from mhgan_dist.report import figures
from mhgan_dist.report.html import FigureRef, render_html
from mhgan_dist.quality.scores import (
    CLASSIFIER_METRICS,
    IMAGE_KINDS,
    QualityScorer,
    chain_statistics,
    dataset_kind,
    scorer_for,
)
from mhgan_dist.report.runs import RunData, dataset_name, load_real, load_run
from mhgan_dist.run.store import RunStore, redact_uri

__all__ = ["ReportResult", "evaluate_runs", "run_labels", "run_names", "out_of_fold_probabilities", "DEFINITIONS",
           "seed_summary", "seed_table_markdown"]

REPORT_FORMAT = "mhgan-dist report"
REPORT_VERSION = 1
DEFAULT_MAX_SAMPLES = 100_000
_PICKER_ORDER = {"base": 0, "drs": 1, "mh": 2}

DEFINITIONS = {
    "grid2d": [
        "High quality (HQ): within 4 standard deviations (0.2) of the nearest of the 25 modes. "
        "JS: Jensen-Shannon divergence between the histogram of nearest modes (26th bin: samples that are not HQ) "
        "and the uniform distribution over the 25 modes, in nats (max ln 2) and bits (max 1); the paper does not "
        "state its base. Modes recovered: modes with at least one HQ sample.",
        "The real row is the model's held-out real sample: its JS is the floor that sampling noise alone gives.",
    ],
    "mixture1d": [
        "JS: Jensen-Shannon divergence between the histogram of nearest modes (0, 1, 2, 3) and uniform over the "
        "4 modes, in nats and bits; no sample is excluded (the modes are 1 apart). Modes recovered: modes with at "
        "least one sample.",
    ],
    "image": [
        "IS: exp(E KL(p(y|x) || p(y))) over the scorer's classes, mean and std over splits. FID: Fréchet distance "
        "between Gaussians fitted to the scorer's features of the samples and of the held-out real images.",
    ],
    "fashion": [
        "Classifier-feature scores: every figure uses the shipped Fashion-MNIST classifier (its 128-d penultimate "
        "features and its 10 class probabilities), not Inception; none is comparable with Inception Score or FID "
        "numbers elsewhere. The real reference is the Fashion-MNIST test split (10,000 images, never used to train "
        "the GAN or to calibrate), shipped as classifier features.",
        "FID: Fréchet distance between Gaussians fitted to the samples' features and to the test split's. "
        "IS analogue: exp(E KL(p(y|x) || p(y))) over the 10 classes (mean over splits; at most 10). "
        "Precision and recall (Kynkaanniemi et al. 2019): the share of samples inside the real k-NN manifold and of "
        "real images inside the samples' manifold; density and coverage (Naeem et al. 2020); k = 5, with equal set "
        "sizes: the first n samples against a fixed random n of the test split (n at most 10,000), so these four are "
        "comparable only at equal n. Class JS: Jensen-Shannon divergence (bits, max 1) between the histogram of the "
        "classifier's argmax and uniform over the 10 classes; classes recovered: classes with at least one sample.",
        "± values: bootstrap standard errors over the samples (100 resamples, seed 0; the k-NN scores with their "
        "balls held fixed, a lower bound); the 'over seeds' table gives the spread over run seeds instead.",
        "The real row scores the model's held-out real images (training-split images the GAN never saw) against "
        "the test split: the level real data reaches at its own n. The classifier was trained on the whole "
        "training split, these images included, so that row is slightly favoured.",
    ],
}


@dataclass(frozen=True)
class ReportResult:
    """Where the report went, and its content (report.json's)."""

    directory: str
    html: str
    report: dict[str, Any]


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """Short unique labels: picker, then what else differs (calibration, K, seed), then an index."""
    def part(run: RunData, key: str) -> str:
        if key == "calibration":
            method = run.calibration_method
            return "" if method == "isotonic" else (" raw" if method == "none" else f" cal={method}")
        if key == "k":
            return f" K={run.chain_length}" if run.thin is None else f" T={run.thin}"
        return f" seed={run.seed}"

    labels = [run.picker for run in runs]
    for key in ("calibration", "k", "seed"):
        values = {part(run, key) for run in runs}
        if len(values) > 1 or (key == "calibration" and values != {""}):
            labels = [label + part(run, key) for label, run in zip(labels, runs, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def run_names(roots: Sequence[str]) -> list[str]:
    """The runs' folder names: the last path component of each root, with as many parent
    components as it takes to tell the runs apart (``seed-0/base``, ``seed-1/base``).

    roots: the run folders as paths ("/" separated). Where the report was written
    (a temporary folder, a bucket) is left out; the same folder given twice gets ``#i``.
    """
    parts = [[p for p in root.split("/") if p] or [root] for root in roots]
    depth = 1
    while depth < max(map(len, parts), default=1) and len({tuple(p[-depth:]) for p in parts}) < len(parts):
        depth += 1
    names = ["/".join(p[-depth:]) for p in parts]
    if len(set(names)) < len(names):
        names = [f"{name} #{i + 1}" for i, name in enumerate(names)]
    return names


def out_of_fold_probabilities(run: RunData) -> np.ndarray:
    """Calibrated P(real) of the run's calibration scores, each from a fit that did not see it.

    Same two folds (split by the run seed) as
    :func:`mhgan_dist.core.calibrators.cross_fitted_diagnostics`, so the diagram
    agrees with report.json's "after" metrics; a saved calibrator is applied as is.
    """
    labels, raw = run.calibration_labels, run.calibration_raw
    method = run.calibration_method
    if method == "none":
        return calibrators.sigmoid(raw)
    real, fake = raw[labels == 1], raw[labels == 0]
    if method not in calibrators.CALIBRATORS:
        saved = run.calibration_report["calibrator"]
        return calibrators.fitted_calibrator(method, real, fake, saved).predict_proba(raw)
    scores = np.concatenate([real, fake])
    ordered_labels = np.concatenate([np.ones(real.size), np.zeros(fake.size)])
    rng = np.random.default_rng(run.seed)
    fold = np.concatenate([rng.permutation(real.size) % 2, rng.permutation(fake.size) % 2])
    out = np.empty(scores.size)
    for held_out in (0, 1):
        train, test = fold != held_out, fold == held_out
        fitted = calibrators.fitted_calibrator(method, scores[train & (ordered_labels == 1)],
                                               scores[train & (ordered_labels == 0)])
        out[test] = fitted.predict_proba(scores[test])
    # Back to the file's order (real rows first there too, but do not rely on it).
    result = np.empty(raw.size)
    result[np.flatnonzero(labels == 1)] = out[: real.size]
    result[np.flatnonzero(labels == 0)] = out[real.size:]
    return result


def _sample_figures(kind: str, runs: Sequence[RunData], real: np.ndarray | None) -> list[FigureRef]:
    ordered = sorted(runs, key=lambda r: _PICKER_ORDER.get(r.picker, 9))
    if runs[0].sample_shape == (2,):
        panels = ([("real (held out)", real)] if real is not None else []) + [(r.label, r.samples) for r in ordered]
        modes = datasets.GRID_MODES if kind == "grid2d" else None
        png = figures.scatter_panels(panels, modes=modes)
        return [FigureRef("samples.png", "Samples side by side: real, then each run "
                          "(red crosses: the 25 mode centres).", png)]
    if runs[0].sample_shape == (1,):
        modes = datasets.MIXTURE_MODES if kind == "mixture1d" else None
        png = figures.histogram_panels([(r.label, r.samples[:, 0]) for r in ordered], modes=modes,
                                       real=None if real is None else real[:, 0])
        return [FigureRef("samples.png", "Histograms of each run's samples (filled) against the held-out real "
                          "samples (outline); dotted lines at the modes.", png)]
    if kind in IMAGE_KINDS:
        panels = ([("real (held out)", real)] if real is not None else []) + [(r.label, r.samples) for r in ordered]
        out = [FigureRef("samples.png", "Samples side by side: held-out real images, then the first 64 samples of "
                         "each run.", figures.image_grid_panels(panels))]
        if real is not None:
            out.append(FigureRef("samples-real.png", "Held-out real images.", figures.image_grid(real[:64], "real")))
        for r in ordered:
            out.append(FigureRef(f"samples-{_slug(r.label)}.png", f"The first 64 samples of {r.label}.",
                                 figures.image_grid(r.samples[:64], r.label)))
        return out
    return []


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "run"


def _d_extremes(run: RunData, slug: str, count: int = 32) -> FigureRef:
    order = np.argsort(run.d_score_raw, kind="stable")
    high, low = order[::-1][:count], order[:count]
    png = figures.image_grid_panels([(f"highest raw D ({count} of {order.size:,})", run.samples[high]),
                                     (f"lowest raw D ({count} of {order.size:,})", run.samples[low])], rows=4)
    return FigureRef(f"d-extremes-{slug}.png", f"{run.label}: the emitted samples D scored highest (left, best "
                     "first) and lowest (right, worst first), among the samples loaded.", png)


def _run_figures(run: RunData, index: int, kind: str = "other") -> list[FigureRef]:
    labels, raw = run.calibration_labels, run.calibration_raw
    cal = run.calibration_report.get("diagnostics", {})
    before = calibrators.sigmoid(raw)
    after = out_of_fold_probabilities(run)
    z_before = cal.get("before", {}).get("dawid_z", float("nan"))
    z_after = cal.get("after", {}).get("dawid_z", float("nan"))
    slug = f"{index:02d}-{_slug(run.label)}"
    out = [
        FigureRef(f"reliability-{slug}.png",
                  f"{run.label}: reliability of D on the held-out calibration set, before (sigmoid of the raw logit) "
                  f"and after {run.calibration_method} calibration (out-of-fold). Marker area: share of scores in "
                  "the bin.",
                  figures.reliability_diagram(labels, before, after,
                                              (f"before: Z = {z_before:+.2f}",
                                               f"after ({run.calibration_method}): Z = {z_after:+.2f}"))),
        FigureRef(f"scores-{slug}.png",
                  f"{run.label}: raw D logits of held-out real samples and of generated calibration draws, and of "
                  "the samples this run emitted.",
                  figures.score_histogram(labels, raw, run.d_score_raw, run.label)),
    ]
    if run.picker in ("mh", "drs"):
        what = "accepted moves" if run.picker == "mh" else "proposals that passed DRS's test"
        out.append(FigureRef(f"chains-{slug}.png", f"{run.label}: {what} per chain; restarted chains in red.",
                             figures.chain_histogram(run.accepts, run.restarted, run.steps_per_output, run.label)))
    if kind in IMAGE_KINDS:
        out.append(_d_extremes(run, slug))
    return out


def evaluate_runs(
    runs: Sequence[str],
    output: str | None = None,
    *,
    inception_weights: str | None = None,
    device: str = "cpu",
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    real: str | None = None,
    names: Sequence[str] | None = None,
    inline_figures: bool = False,
    log: Callable[[str], None] | None = None,
) -> ReportResult:
    """Computes the metrics of finished runs and writes the report.

    runs: run directories (local paths or URIs), typically one per picker on
    the same proposals. output: the report folder; default ``<first run>/report/``.
    max_samples: samples read per run (the first by sample_id); None = all.
    real: held-out real samples to compare with, instead of the model's.
    names: what the report calls each run, one per run in order; default the
    folders' names (:func:`run_names`). The report shows names, never where the
    runs are stored, except in report.json's ``uri`` and as the name's tooltip.
    Raises InputError for an unreadable run, ConfigError for incompatible runs.
    """
    say = log or (lambda message: None)
    loaded = _load_runs(runs, max_samples, names)
    first = loaded[0]
    dataset = dataset_name(first)
    kind = dataset_kind(dataset, first.sample_shape)
    real_samples = load_real(first, real)
    scorer = scorer_for(kind, dataset, real=real_samples, device=device, inception_weights=inception_weights)
    real_entry = _real_entry(scorer, say)
    entries = [_run_entry(run, scorer, say) for run in loaded]
    network = scorer.network
    report: dict[str, Any] = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "title": f"MH-GAN sample report: {dataset or 'model'}",
        "subtitle": f"{len(loaded)} run(s), samples of shape {list(first.sample_shape)}; kind: {kind}",
        "kind": kind, "dataset": dataset, "runs": entries, "real": real_entry, "notes": _notes(loaded, scorer),
        "definitions": DEFINITIONS.get(kind, []),
        "scorer": None if network is None else {"name": network.name,
                                                "comparable_to_inception": network.comparable_to_inception,
                                                **network.info},
    }
    sample_figures = _sample_figures(kind, loaded, real_samples)
    if kind == "fashion":
        report["class_names"] = list(datasets.FASHION_CLASSES)
        report["seed_summary"] = seed_summary(entries)
        sample_figures.append(_class_mix_figure(entries, real_entry))
    run_figures = {run.label: _run_figures(run, i, kind) for i, run in enumerate(loaded)}
    every_figure = sample_figures + [f for group in run_figures.values() for f in group]
    report["figures"] = [{"file": f.name, "caption": f.caption} for f in every_figure]
    page = render_html(report, sample_figures, run_figures, inline=inline_figures)
    return _write_report(runs[0], output, report, every_figure, page)


def _load_runs(runs: Sequence[str], max_samples: int | None, names: Sequence[str] | None) -> list[RunData]:
    """The runs, read and checked, each with its label and name set; ConfigError for a bad request."""
    if not runs:
        raise ConfigError("give at least one run directory")
    if max_samples is not None and max_samples < 2:
        raise ConfigError(f"--max-samples must be at least 2, got {max_samples}")
    if names is not None:
        if len(names) != len(runs):
            raise ConfigError(f"give one --name per run: {len(names)} name(s) for {len(runs)} run(s)")
        if any(not name.strip() for name in names) or len(set(names)) < len(names):
            raise ConfigError(f"run names must be non-empty and distinct, got {list(names)}")
    loaded = [load_run(uri, max_samples) for uri in runs]
    shapes = {run.sample_shape for run in loaded}
    if len(shapes) > 1:
        raise ConfigError(f"the runs hold samples of different shapes ({sorted(shapes)}); report them separately")
    for run, label, name in zip(loaded, run_labels(loaded), names or run_names([r.root for r in loaded]), strict=True):
        run.label, run.name = label, name
    return loaded


def _real_entry(scorer: QualityScorer, say: Callable[[str], None]) -> dict[str, Any] | None:
    """report.json's ``real``: the held-out real samples' count and their own scores; None without them."""
    if scorer.real is None:
        return None
    if scorer.network is not None:
        say(f"scoring {scorer.real.shape[0]:,} real images with {scorer.network.name}")
    return {"num_samples": int(scorer.real.shape[0]), "quality": scorer.real_quality()}


def _notes(runs: Sequence[RunData], scorer: QualityScorer) -> list[str]:
    """report.json's notes: runs of different models, image scores left out, and what the image scores measure."""
    notes = []
    if len({r.model_fingerprint for r in runs}) > 1:
        notes.append("the runs come from different model files; the real samples are those of the first run's model")
    if scorer.note:
        notes.append(scorer.note)
    network = scorer.network
    if network is None:
        return notes
    if scorer.kind == "fashion":
        return notes + [f"Every image score uses {network.name} (test accuracy "
                        f"{network.info.get('test_accuracy'):.4f}): classifier-feature scores of Fashion-MNIST "
                        "models only, not comparable with Inception Score or FID."]
    return notes + [f"IS and FID use {network.name}." + (
        "" if network.comparable_to_inception else
        " These numbers measure the digits model only and are not comparable with Inception Score or FID.")]


def _run_entry(run: RunData, scorer: QualityScorer, say: Callable[[str], None]) -> dict[str, Any]:
    """report.json's entry of one run: what it is, its scores, chain statistics and calibration diagnostics."""
    say(f"evaluating {run.label}: {run.samples.shape[0]:,} samples from {redact_uri(run.uri)}")
    quality = scorer(run.samples)
    if run.total_samples > run.samples.shape[0]:
        run.notes.append(f"metrics use the first {run.samples.shape[0]:,} of {run.total_samples:,} samples")
    diagnostics = run.calibration_report.get("diagnostics", {})
    return {
        "label": run.label, "name": run.name, "uri": redact_uri(run.uri), "run_id": run.run_id,
        "picker": run.picker, "chain_length": run.chain_length, "thin": run.thin,
        "calibration_method": run.calibration_method,
        "seed": run.seed, "num_samples": int(run.samples.shape[0]), "total_samples": run.total_samples,
        "quality": quality,
        "chains": chain_statistics(run.stats, run.accepts, run.restarted, run.chain_length),
        "calibration": {"before": diagnostics.get("before", {}), "after": diagnostics.get("after", {}),
                        "num_real": diagnostics.get("num_real"), "num_generated": diagnostics.get("num_generated")},
        "notes": run.notes,
    }


def _class_mix_figure(entries: Sequence[dict[str, Any]], real_entry: dict[str, Any] | None) -> FigureRef:
    """classes.png: each set's share of samples per Fashion-MNIST class, the real set first."""
    panels = ([("real (held out)", real_entry["quality"]["class_counts"])]
              if real_entry is not None and real_entry.get("quality") else [])
    panels += [(e["label"], e["quality"]["class_counts"]) for e in
               sorted(entries, key=lambda e: _PICKER_ORDER.get(e["picker"], 9))]
    return FigureRef("classes.png", "Class mix: the share of each set's samples per class "
                     "(the classifier's argmax); dashed: uniform.",
                     figures.class_histogram(panels, datasets.FASHION_CLASSES))


def _write_report(first_run: str, output: str | None, report: dict[str, Any], every_figure: Sequence[FigureRef],
                  page: str) -> ReportResult:
    """Writes the figures, report.json, summary.md (with a seed summary) and report.html into ``output``,
    else ``<first_run>/report/``; InputError when they cannot be written."""
    markdown = seed_table_markdown(report) if report.get("seed_summary") else None
    if output is None:
        store, prefix = RunStore(first_run), "report/"
    else:
        store, prefix = RunStore(output), ""
    try:
        if output is not None:
            store.ensure_writable()
        for f in every_figure:
            store.write_bytes(prefix + f.name, f.png)
        store.write_json(prefix + "report.json", report)
        if markdown is not None:
            store.write_bytes(prefix + "summary.md", markdown.encode("utf-8"))
        store.write_bytes(prefix + "report.html", page.encode("utf-8"))
    except OSError as exc:
        raise InputError(f"the report cannot be written to {store.display}: {exc}") from None
    directory = store.path(prefix.rstrip("/")) if prefix else store.root
    return ReportResult(directory=directory, html=store.path(prefix + "report.html"), report=report)


def _method_label(entry: dict[str, Any], with_k: bool) -> str:
    method = entry["calibration_method"]
    label = entry["picker"] + ("" if method == "isotonic" or entry["picker"] == "base" else
                               " raw D" if method == "none" else f" cal={method}")
    if with_k and entry["picker"] != "base":
        label += f" K={entry['chain_length']}" if entry.get("thin") is None else f" T={entry['thin']}"
    return label


def seed_summary(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs grouped by method (picker, calibration, K or T), each classifier-feature figure over their seeds.

    entries: report.json's runs with classifier_quality dicts. Returns one dict per
    method: label, seeds, num_samples, per-metric seed spreads (metrics.Spread JSON),
    acceptance rate spread, and the mean class shares.
    """
    from mhgan_dist.quality import metrics

    with_k = len({(e["chain_length"], e.get("thin")) for e in entries if e["picker"] != "base"}) > 1
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(entries, key=lambda e: (_PICKER_ORDER.get(e["picker"], 9), e["calibration_method"] == "none",
                                                e["chain_length"])):
        if entry.get("quality"):
            groups.setdefault(_method_label(entry, with_k), []).append(entry)
    out = []
    for label, group in groups.items():
        figures_ = {key: metrics.seed_spread([e["quality"][key] for e in group]).to_json()
                    for key, _ in CLASSIFIER_METRICS}
        acceptance = [e["chains"]["acceptance_rate"] for e in group if e["chains"].get("acceptance_rate") is not None]
        shares = np.mean([np.asarray(e["quality"]["class_counts"], float) / e["quality"]["n"] for e in group], axis=0)
        out.append({"label": label, "seeds": [e["seed"] for e in group],
                    "num_samples": sorted({e["num_samples"] for e in group}),
                    "knn_n": sorted({e["quality"]["knn_n"] for e in group}),
                    "chain_length": sorted({e["chain_length"] for e in group}),
                    "metrics": figures_,
                    "acceptance_rate": metrics.seed_spread(acceptance).to_json() if acceptance else None,
                    "class_shares": shares.tolist()})
    return out


_TABLE_DIGITS = {"fid": 2, "inception_score": 3, "classes_recovered": 1, "class_js_bits": 4}


def seed_table_markdown(report: dict[str, Any]) -> str:
    """Markdown tables of report.json's seed summary: every figure as mean ± std over seeds, then the class mix."""
    names = CLASSIFIER_METRICS

    def cell(spread: dict[str, Any], key: str) -> str:
        digits = _TABLE_DIGITS.get(key, 3)
        return f"{spread['value']:.{digits}f} ± {spread['std']:.{digits}f}"

    summary = report["seed_summary"]
    head = "| method | seeds | n | " + " | ".join(title for _, title in names) + " | acceptance |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in summary:
        acceptance = "–" if row["acceptance_rate"] is None or row["label"] == "base" else cell(row["acceptance_rate"], "")
        lines.append(f"| {row['label']} | {len(row['seeds'])} | {', '.join(f'{n:,}' for n in row['num_samples'])} | "
                     + " | ".join(cell(row["metrics"][key], key) for key, _ in names) + f" | {acceptance} |")
    real = report.get("real") or {}
    quality = real.get("quality")
    if quality and "precision" in quality:
        lines.append(f"| real (held out, one set) | – | {quality['n']:,} | "
                     + " | ".join(f"{quality[key]:.{_TABLE_DIGITS.get(key, 3)}f}" for key, _ in names) + " | – |")
    classes = report.get("class_names") or [str(i) for i in range(len(summary[0]["class_shares"]))]
    lines += ["", "Class mix (share of samples per class, classifier argmax, mean over seeds; uniform = 0.100):", "",
              "| method | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
    for row in summary:
        lines.append(f"| {row['label']} | " + " | ".join(f"{v:.3f}" for v in row["class_shares"]) + " |")
    if quality and "class_counts" in quality:
        counts = np.asarray(quality["class_counts"], float)
        lines.append("| real (held out) | " + " | ".join(f"{v:.3f}" for v in counts / counts.sum()) + " |")
    lines += ["", "Per run (seed): class counts", "", "| run | seed | " + " | ".join(classes) + " |",
              "|" + "---|" * (len(classes) + 2)]
    for run in report["runs"]:
        if run.get("quality") and "class_counts" in run["quality"]:
            lines.append(f"| {run['label']} | {run['seed']} | " + " | ".join(str(c) for c in run["quality"]["class_counts"])
                         + " |")
    return "\n".join(lines) + "\n"
