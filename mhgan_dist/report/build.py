"""Evaluate one or more finished runs and write ``report/``: report.json, report.html, PNG figures."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mhgan_dist import calibration, data
from mhgan_dist.errors import ConfigError, InputError
from mhgan_dist.report import figures
from mhgan_dist.report.html import FigureRef, render_html
from mhgan_dist.report.quality import TOY_KINDS, chain_statistics, dataset_kind, image_quality, toy_quality
from mhgan_dist.report.runs import RunData, dataset_name, load_real, load_run
from mhgan_dist.store import RunStore, redact_uri

__all__ = ["ReportResult", "evaluate_runs", "run_labels", "out_of_fold_probabilities", "DEFINITIONS"]

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


def out_of_fold_probabilities(run: RunData) -> np.ndarray:
    """Calibrated P(real) of the run's calibration scores, each from a fit that did not see it.

    Same two folds (split by the run seed) as
    :func:`mhgan_dist.calibration.cross_fitted_diagnostics`, so the diagram
    agrees with report.json's "after" metrics; a saved calibrator is applied as is.
    """
    labels, raw = run.calibration_labels, run.calibration_raw
    method = run.calibration_method
    if method == "none":
        return calibration.sigmoid(raw)
    if method not in calibration.CALIBRATORS:
        return calibration.calibrator_from_json(run.calibration_report["calibrator"]).predict_proba(raw)
    real, fake = raw[labels == 1], raw[labels == 0]
    scores = np.concatenate([real, fake])
    ordered_labels = np.concatenate([np.ones(real.size), np.zeros(fake.size)])
    rng = np.random.default_rng(run.seed)
    fold = np.concatenate([rng.permutation(real.size) % 2, rng.permutation(fake.size) % 2])
    out = np.empty(scores.size)
    for held_out in (0, 1):
        train, test = fold != held_out, fold == held_out
        fitted = calibration.make_calibrator(method).fit(scores[train & (ordered_labels == 1)],
                                                         scores[train & (ordered_labels == 0)])
        out[test] = fitted.predict_proba(scores[test])
    # Back to the file's order (real rows first there too, but do not rely on it).
    result = np.empty(raw.size)
    result[np.flatnonzero(labels == 1)] = out[: real.size]
    result[np.flatnonzero(labels == 0)] = out[real.size:]
    return result


def _scorer(kind: str, dataset: str | None, inception_weights: str | None, device: str):
    from mhgan_dist import scoring_models

    if kind != "image":
        return None, None
    if dataset == "digits":
        return scoring_models.load_digit_classifier(device=device), None
    if inception_weights is None:
        return None, ("IS and FID are left out: pass --inception-weights PATH (a local torchvision inception_v3 "
                      "state dict; nothing is downloaded)")
    return scoring_models.load_inception(inception_weights, device=device), None


def _sample_figures(kind: str, runs: Sequence[RunData], real: np.ndarray | None) -> list[FigureRef]:
    ordered = sorted(runs, key=lambda r: _PICKER_ORDER.get(r.picker, 9))
    if runs[0].sample_shape == (2,):
        panels = ([("real (held out)", real)] if real is not None else []) + [(r.label, r.samples) for r in ordered]
        modes = data.GRID_MODES if kind == "grid2d" else None
        png = figures.scatter_panels(panels, modes=modes)
        return [FigureRef("samples.png", "Samples side by side: real, then each run "
                          "(red crosses: the 25 mode centres).", png)]
    if runs[0].sample_shape == (1,):
        modes = data.MIXTURE_MODES if kind == "mixture1d" else None
        png = figures.histogram_panels([(r.label, r.samples[:, 0]) for r in ordered], modes=modes,
                                       real=None if real is None else real[:, 0])
        return [FigureRef("samples.png", "Histograms of each run's samples (filled) against the held-out real "
                          "samples (outline); dotted lines at the modes.", png)]
    if kind == "image":
        out = []
        if real is not None:
            out.append(FigureRef("samples-real.png", "Held-out real images.", figures.image_grid(real[:64], "real")))
        for r in ordered:
            out.append(FigureRef(f"samples-{_slug(r.label)}.png", f"The first 64 samples of {r.label}.",
                                 figures.image_grid(r.samples[:64], r.label)))
        return out
    return []


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "run"


def _run_figures(run: RunData, index: int) -> list[FigureRef]:
    labels, raw = run.calibration_labels, run.calibration_raw
    cal = run.calibration_report.get("diagnostics", {})
    before = calibration.sigmoid(raw)
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
    return out


def evaluate_runs(
    runs: Sequence[str],
    output: str | None = None,
    *,
    inception_weights: str | None = None,
    device: str = "cpu",
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    real: str | None = None,
    inline_figures: bool = False,
    log: Callable[[str], None] | None = None,
) -> ReportResult:
    """Computes the metrics of finished runs and writes the report.

    runs: run directories (local paths or URIs), typically one per picker on
    the same proposals. output: the report folder; default ``<first run>/report/``.
    max_samples: samples read per run (the first by sample_id); None = all.
    real: held-out real samples to compare with, instead of the model's.
    Raises InputError for an unreadable run, ConfigError for incompatible runs.
    """
    if not runs:
        raise ConfigError("give at least one run directory")
    if max_samples is not None and max_samples < 2:
        raise ConfigError(f"--max-samples must be at least 2, got {max_samples}")
    say = log or (lambda message: None)
    loaded = [load_run(uri, max_samples) for uri in runs]
    shapes = {run.sample_shape for run in loaded}
    if len(shapes) > 1:
        raise ConfigError(f"the runs hold samples of different shapes ({sorted(shapes)}); report them separately")
    for run, label in zip(loaded, run_labels(loaded), strict=True):
        run.label = label
    first = loaded[0]
    dataset = dataset_name(first)
    kind = dataset_kind(dataset, first.sample_shape)
    real_samples = load_real(first, real)
    notes: list[str] = []
    fingerprints = {r.manifest.get("identity", {}).get("model_fingerprint") for r in loaded}
    if len(fingerprints) > 1:
        notes.append("the runs come from different model files; the real samples are those of the first run's model")

    scorer, scorer_note = _scorer(kind, dataset, inception_weights, device)
    if scorer_note:
        notes.append(scorer_note)
    real_features = None
    real_entry: dict[str, Any] | None = None
    if real_samples is not None:
        real_entry = {"num_samples": int(real_samples.shape[0]), "quality": None}
        if kind in TOY_KINDS:
            real_entry["quality"] = toy_quality(kind, real_samples)
        elif scorer is not None:
            say(f"scoring {real_samples.shape[0]:,} real images with {scorer.name}")
            real_probs, real_features = scorer.score(real_samples)
            real_entry["quality"] = image_quality(real_probs, real_features, None)
    if scorer is not None:
        notes.append(f"IS and FID use {scorer.name}." + (
            "" if scorer.comparable_to_inception else
            " These numbers measure the digits model only and are not comparable with Inception Score or FID."))

    entries = []
    for run in loaded:
        say(f"evaluating {run.label}: {run.samples.shape[0]:,} samples from {redact_uri(run.uri)}")
        quality = None
        if kind in TOY_KINDS:
            quality = toy_quality(kind, run.samples)
        elif scorer is not None:
            probs, features = scorer.score(run.samples)
            quality = image_quality(probs, features, real_features)
        if run.total_samples > run.samples.shape[0]:
            run.notes.append(f"metrics use the first {run.samples.shape[0]:,} of {run.total_samples:,} samples")
        diagnostics = run.calibration_report.get("diagnostics", {})
        entries.append({
            "label": run.label, "uri": redact_uri(run.uri), "run_id": run.manifest.get("run_id"),
            "picker": run.picker, "chain_length": run.chain_length, "thin": run.thin,
            "calibration_method": run.calibration_method,
            "seed": run.seed, "num_samples": int(run.samples.shape[0]), "total_samples": run.total_samples,
            "quality": quality,
            "chains": chain_statistics(run.stats, run.accepts, run.restarted, run.chain_length),
            "calibration": {"before": diagnostics.get("before", {}), "after": diagnostics.get("after", {}),
                            "num_real": diagnostics.get("num_real"), "num_generated": diagnostics.get("num_generated")},
            "notes": run.notes,
        })

    report: dict[str, Any] = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "title": f"MH-GAN sample report: {dataset or 'model'}",
        "subtitle": f"{len(loaded)} run(s), samples of shape {list(first.sample_shape)}; kind: {kind}",
        "kind": kind, "dataset": dataset, "runs": entries, "real": real_entry, "notes": notes,
        "definitions": DEFINITIONS.get(kind, []),
        "scorer": None if scorer is None else {"name": scorer.name, "comparable_to_inception": scorer.comparable_to_inception,
                                               **scorer.info},
    }
    sample_figures = _sample_figures(kind, loaded, real_samples)
    run_figures = {run.label: _run_figures(run, i) for i, run in enumerate(loaded)}
    every_figure = sample_figures + [f for group in run_figures.values() for f in group]
    report["figures"] = [{"file": f.name, "caption": f.caption} for f in every_figure]

    if output is None:
        store, prefix = RunStore(runs[0]), "report/"
    else:
        store, prefix = RunStore(output), ""
    try:
        if output is not None:
            store.ensure_writable()
        for f in every_figure:
            store.write_bytes(prefix + f.name, f.png)
        store.write_json(prefix + "report.json", report)
        store.write_bytes(prefix + "report.html",
                          render_html(report, sample_figures, run_figures, inline=inline_figures).encode("utf-8"))
    except OSError as exc:
        raise InputError(f"the report cannot be written to {store.display}: {exc}") from None
    directory = store.path(prefix.rstrip("/")) if prefix else store.root
    return ReportResult(directory=directory, html=store.path(prefix + "report.html"), report=report)

