"""The calibrator study: which discriminator, calibrator, tempering b and K make MH best on a model.

A row is one (discriminator, seed, method, calibration, b, K, n) re-pick of a
stored proposal run with its sample-quality metrics. :func:`run_study` runs
the screening (every row of the grid) or the confirmation of one setting (see
``jobs.reproduce calibrator-study``): per (D, seed) one pipeline MH run at the
largest K makes the proposals, and every row re-picks them in this process
(:class:`~mhgan_dist.pipeline.local_repick.StoredRun`), rebuilds the picked
samples with G and scores them (:class:`RowScorer`). Rows go to an append-only
log a re-run resumes from (:class:`ResultsLog`); the setting is chosen by a
rule fixed before any result existed (:func:`choose_setting`,
:data:`SELECTION_RULE`); the results are Markdown tables and PNG figures.

The rule, tables and figures need numpy and matplotlib (Agg, no pyplot) only;
:func:`run_study` runs G, D and the scoring networks, and Ray for the runs it makes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mhgan_dist.errors import ConfigError
from mhgan_dist.models import ModelFiles
from mhgan_dist.quality.scores import TOY_KINDS, QualityScorer, model_kind, scorer_for

if TYPE_CHECKING:
    from mhgan_dist.pipeline.local_repick import StoredRun
    from mhgan_dist.pipeline.proposals import ProposalWorker

__all__ = [
    "CALIBRATOR_ORDER",
    "SELECTION_RULE",
    "TIE_SDS",
    "STUDY_RESULTS",
    "CONFIRM_DIR",
    "CalibratorStudy",
    "run_study",
    "Setting",
    "Candidate",
    "row_key",
    "ResultsLog",
    "RowScorer",
    "row_scorer",
    "primary_metric",
    "choose_setting",
    "screening_markdown",
    "confirmation_markdown",
    "paired_differences",
    "metric_against_k_png",
    "precision_recall_png",
    "calibration_png",
]

# Simplest first: ties of the selection rule go to the earlier calibrator.
CALIBRATOR_ORDER = ("none", "isotonic", "isotonic-capped", "platt", "beta")
TIE_SDS = 2.0
METHOD_ORDER = {"base": 0, "drs": 1, "mh": 2}

SELECTION_RULE = (
    "Selection rule (fixed in code, `mhgan_dist.studies.calibrator.choose_setting`, before any result existed): "
    "among the MH settings (discriminator, calibrator, b, K) measured on every screening seed, the best is the "
    "one of lowest mean {metric} over the seeds. A setting ties with the best when the mean of its paired "
    "per-seed difference in {metric} to the best is at most {sds:g} sample standard deviations of that "
    "difference (same seed, same proposals). Among the ties, the rule takes the smallest K, then the simpler "
    "calibrator (none, isotonic, isotonic-capped, platt, beta), then b = 1 over smaller b (the larger b), then "
    "the discriminator listed first in --discriminators ({discriminators})."
)

_IMAGE_COLUMNS = (("fid", "FID", 2), ("inception_score", "IS analogue", 3), ("precision", "precision", 3),
                  ("recall", "recall", 3), ("density", "density", 3), ("coverage", "coverage", 3),
                  ("class_js_bits", "class JS (bits)", 4))
_TOY_COLUMNS = (("js_nats", "JS (nats)", 4), ("hq_share", "HQ share", 3), ("modes_recovered", "modes", 1))
_CHAIN_COLUMNS = (("acceptance_rate", "acceptance", 3), ("restart_rate", "restarts", 3))


def primary_metric(kind: str) -> str:
    """The metric the selection rule minimises: FID for image models, JS (nats) for the toys."""
    return "js_nats" if kind in ("grid2d", "mixture1d") else "fid"


def _columns(kind: str) -> tuple[tuple[str, str, int], ...]:
    return (_TOY_COLUMNS if kind in ("grid2d", "mixture1d") else _IMAGE_COLUMNS) + _CHAIN_COLUMNS


# ------------------------------------------------------------------ rows and their log


def row_key(d: str, seed: int, method: str, calibration: str, odds_power: float, chain_length: int,
            num_samples: int) -> str:
    """The identity of a result row: what a re-run looks up to skip it."""
    return f"{d}|{int(seed)}|{method}|{calibration}|{float(odds_power):g}|{int(chain_length)}|{int(num_samples)}"


class ResultsLog:
    """Rows as JSON lines, appended (and synced) as each finishes; a re-run reads them back and skips them.

    A last line cut short by a crash is dropped on reading (its row is redone).
    Each row holds its ``key`` (:func:`row_key`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            for number, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if number == len(lines) - 1:
                        continue  # a write cut short: redo that row
                    raise ValueError(f"{self.path} line {number + 1} is not JSON; remove it to redo its row") from None
                self.rows[row["key"]] = row
            if lines and not self.path.read_text().endswith("\n"):
                self._rewrite()

    def _rewrite(self) -> None:
        body = "".join(json.dumps(row) + "\n" for row in self.rows.values())
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(body)
        os.replace(tmp, self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[row["key"]] = row

    def values(self) -> list[dict[str, Any]]:
        return list(self.rows.values())


# ------------------------------------------------------------------ metrics of samples

# A row's classifier-feature scores: no bootstrap (the study's spreads come from seeds).
_ROW_IMAGE_SCORES = ("n", "fid", "inception_score", "precision", "recall", "density", "coverage", "knn_n",
                     "class_js_nats", "class_js_bits", "classes_recovered", "class_counts")


@dataclass(frozen=True)
class RowScorer:
    """Sample-quality metrics of a row: ``scorer(samples) -> dict``.

    grid2d, mixture1d: the paper's mode metrics (JS in nats and bits, HQ share,
    modes recovered, per-mode counts). fashion: the shipped classifier's scores
    against the Fashion-MNIST test split (FID, IS analogue, precision, recall,
    density, coverage, class mix; mhgan_dist.quality.scores.classifier_quality).
    digits: the same scores with the shipped digit classifier, against the
    model's held-out real images. Every row adds ``shares``, the mode (last:
    not HQ) or class mix of the samples. ``class_names`` names the class-mix entries.
    """

    quality: QualityScorer
    class_names: tuple[str, ...]

    def __call__(self, samples: np.ndarray) -> dict[str, Any]:
        quality = self.quality(samples)
        assert quality is not None  # row_scorer refuses kinds without scores
        if self.quality.network is None:
            counts = np.asarray(quality["counts"], dtype=np.float64)
            return {**quality, "shares": (counts / counts.sum()).tolist()}
        counts = np.asarray(quality["class_counts"], dtype=np.float64)
        return {**{k: quality[k] for k in _ROW_IMAGE_SCORES}, "shares": (counts / counts.sum()).tolist()}


def row_scorer(files: ModelFiles, device: str = "cpu") -> RowScorer:
    """The scorer of the study's rows on ``files``' kind of model; ConfigError for a kind the study does not score."""
    from mhgan_dist.models import load_real_samples
    from mhgan_dist.training import datasets

    kind, dataset = model_kind(files)
    real = None if files.real is None else load_real_samples(files.real, tuple(files.metadata.get("sample_shape", [])))
    quality = scorer_for(kind, dataset, real=real, device=device, classifier_scores=True, rounds=0)
    if quality.network is None and kind not in TOY_KINDS:
        raise ConfigError(f"the calibrator study scores grid2d, mixture1d, fashion and digits models, not a {kind!r} "
                          f"model of dataset {dataset!r}")
    if quality.network is None:
        return RowScorer(quality, ())
    names = datasets.FASHION_CLASSES if kind == "fashion" else tuple(str(i) for i in range(quality.network.num_classes))
    return RowScorer(quality, tuple(names))


# ------------------------------------------------------------------ the selection rule


@dataclass(frozen=True)
class Setting:
    """An MH setting of the study."""

    discriminator: str
    calibration: str
    odds_power: float
    chain_length: int

    def label(self) -> str:
        return f"D={self.discriminator}, {self.calibration}, b={self.odds_power:g}, K={self.chain_length}"

    def to_json(self) -> dict[str, Any]:
        return {"discriminator": self.discriminator, "calibration": self.calibration,
                "odds_power": self.odds_power, "chain_length": self.chain_length}

    @staticmethod
    def of(row: dict[str, Any]) -> "Setting":
        return Setting(row["d"], row["calibration"], float(row["odds_power"]), int(row["chain_length"]))


@dataclass(frozen=True)
class Candidate:
    """A setting's standing: mean metric over seeds, paired difference to the best (mean, sample sd), tie."""

    setting: Setting
    mean: float
    diff_mean: float
    diff_sd: float
    ties: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.setting.to_json(), "mean": self.mean, "diff_mean": self.diff_mean, "diff_sd": self.diff_sd,
                "ties": self.ties}


def _order(value: str, order: Sequence[str]) -> int:
    return order.index(value) if value in order else len(order)


def choose_setting(rows: Iterable[dict[str, Any]], metric: str, discriminators: Sequence[str],
                   tie_sds: float = TIE_SDS) -> tuple[Setting, list[Candidate]]:
    """The selection rule (:data:`SELECTION_RULE`) over the MH rows: (chosen setting, every candidate, best first).

    rows: result rows with keys d, seed, method, calibration, odds_power,
    chain_length and ``metric`` (lower is better). Only MH rows count, and only
    settings measured on every seed any MH row has. ValueError when none is.
    """
    values: dict[Setting, dict[int, float]] = {}
    seeds: set[int] = set()
    for row in rows:
        if row["method"] != "mh" or row.get(metric) is None:
            continue
        values.setdefault(Setting.of(row), {})[int(row["seed"])] = float(row[metric])
        seeds.add(int(row["seed"]))
    complete = {s: v for s, v in values.items() if set(v) == seeds}
    if not complete:
        raise ValueError(f"no MH setting has {metric} on every seed ({sorted(seeds)})")
    order = sorted(seeds)

    def preference(setting: Setting) -> tuple:
        return (setting.chain_length, _order(setting.calibration, CALIBRATOR_ORDER), -setting.odds_power,
                _order(setting.discriminator, list(discriminators)))

    means = {s: float(np.mean([v[seed] for seed in order])) for s, v in complete.items()}
    best = min(complete, key=lambda s: (means[s], preference(s)))
    candidates = []
    for setting, v in complete.items():
        diffs = np.array([v[seed] - complete[best][seed] for seed in order])
        sd = float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0
        mean = float(diffs.mean())
        candidates.append(Candidate(setting, means[setting], mean, sd, mean <= tie_sds * sd))
    chosen = min((c.setting for c in candidates if c.ties), key=preference)
    candidates.sort(key=lambda c: (c.mean, preference(c.setting)))
    return chosen, candidates


# ------------------------------------------------------------------ tables


def _group_key(row: dict[str, Any], discriminators: Sequence[str]) -> tuple:
    return (_order(row["d"], list(discriminators)), int(row["chain_length"]), METHOD_ORDER.get(row["method"], 9),
            _order(row["calibration"], CALIBRATOR_ORDER), -float(row["odds_power"]))


def _groups(rows: Iterable[dict[str, Any]], discriminators: Sequence[str]) -> list[list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["d"], row["method"], row["calibration"], float(row["odds_power"]),
                           int(row["chain_length"])), []).append(row)
    return [sorted(g, key=lambda r: r["seed"]) for _, g in sorted(groups.items(),
                                                                 key=lambda item: _group_key(item[1][0], discriminators))]


def _mean_sd(values: Sequence[float], digits: int) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return "–"
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def _method_cells(row: dict[str, Any]) -> list[str]:
    if row["method"] == "base":
        return [row["d"], "base", "–", "–", str(row["chain_length"])]
    return [row["d"], row["method"], row["calibration"], f"{float(row['odds_power']):g}", str(row["chain_length"])]


def _table(head: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def screening_markdown(rows: Sequence[dict[str, Any]], kind: str, discriminators: Sequence[str],
                       class_names: Sequence[str], chosen: Setting | None = None) -> str:
    """The screening table (mean ± sample sd over seeds per setting) and the class (or mode) mix."""
    columns = _columns(kind)
    groups = _groups(rows, discriminators)
    head = ["D", "method", "calibration", "b", "K", "seeds", *(title for _, title, _ in columns)]
    body = []
    for group in groups:
        mark = " **(chosen)**" if chosen is not None and group[0]["method"] == "mh" and Setting.of(group[0]) == chosen \
            else ""
        cells = _method_cells(group[0])
        cells[1] += mark
        body.append(cells + [",".join(str(r["seed"]) for r in group)]
                    + [_mean_sd([r.get(key) for r in group], digits) for key, _, digits in columns])
    lines = _table(head, body)
    names = list(class_names) or [f"mode {i}" for i in range(len(groups[0][0]["shares"]) - 1)] + ["not HQ"]
    what = "class" if class_names else "mode"
    lines += ["", f"{what.capitalize()} mix: share of samples per {what} (mean over seeds"
              + ("; the classifier's argmax; uniform = " + f"{1 / len(names):.3f}" if class_names else "") + ").", ""]
    mix = [_method_cells(g[0]) + [f"{v:.3f}" for v in np.mean([r["shares"] for r in g], axis=0)] for g in groups]
    lines += _table(["D", "method", "calibration", "b", "K", *names], mix)
    return "\n".join(lines) + "\n"


def paired_differences(rows: Sequence[dict[str, Any]], a: dict[str, Any], b: dict[str, Any],
                       metric: str) -> tuple[float, float, int] | None:
    """(mean, sample sd, seeds) over seeds of metric(rows matching ``a``) - metric(rows matching ``b``), paired by seed.

    a, b: field values a row must have (e.g. {"method": "mh", "calibration": "platt"}); None without a common seed.
    """
    def by_seed(match: dict[str, Any]) -> dict[int, float]:
        return {int(r["seed"]): float(r[metric]) for r in rows
                if all(r.get(k) == v for k, v in match.items()) and r.get(metric) is not None}

    left, right = by_seed(a), by_seed(b)
    seeds = sorted(set(left) & set(right))
    if not seeds:
        return None
    diffs = np.array([left[s] - right[s] for s in seeds])
    return float(diffs.mean()), float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0, len(seeds)


def confirmation_markdown(rows: Sequence[dict[str, Any]], kind: str, setting: Setting,
                          class_names: Sequence[str], tie_sds: float = TIE_SDS) -> str:
    """The confirmation's tables: every method (mean ± sd over seeds), MH minus base and minus each DRS
    (paired by seed: mean ± sample sd of the difference), the class mix, and the issue's checks."""
    columns = _columns(kind)
    lines = [screening_markdown(rows, kind, [setting.discriminator], class_names, setting).rstrip("\n"), ""]
    mh = {"method": "mh", "calibration": setting.calibration, "odds_power": setting.odds_power}
    others = [("base", {"method": "base"})]
    drs = sorted({(r["calibration"], float(r["odds_power"])) for r in rows if r["method"] == "drs"},
                 key=lambda c: (_order(c[0], CALIBRATOR_ORDER), -c[1]))
    others += [(f"DRS {cal}, b={b:g}", {"method": "drs", "calibration": cal, "odds_power": b}) for cal, b in drs]
    head = ["difference", "seeds", *(title for _, title, _ in columns)]
    body = []
    for name, match in others:
        cells = []
        seeds = 0
        for key, _, digits in columns:
            d = paired_differences(rows, mh, match, key)
            cells.append("–" if d is None else f"{d[0]:+.{digits}f} ± {d[1]:.{digits}f}")
            seeds = max(seeds, 0 if d is None else d[2])
        body.append([f"MH − {name}", str(seeds), *cells])
    lines += [f"Paired differences, MH ({setting.label()}) minus each method on the same proposals: mean ± sample "
              "standard deviation over seeds of the per-seed difference.", "", *_table(head, body), ""]
    lines += ["Checks (issue #15, 'Must show'):", ""]
    metric = primary_metric(kind)
    name = "FID" if metric == "fid" else "JS"
    for label, match in others:
        d = paired_differences(rows, mh, match, metric)
        if d is None:
            continue
        passed = d[0] < 0 and -d[0] > tie_sds * d[1]
        lines.append(f"- {name}: MH below {label} by more than {tie_sds:g} sd of the paired difference: "
                     f"{'yes' if passed else 'no'} ({d[0]:+.4g} ± {d[1]:.4g})")
    if metric == "fid":
        p = paired_differences(rows, mh, {"method": "base"}, "precision")
        r = paired_differences(rows, mh, {"method": "base"}, "recall")
        if p is not None:
            lines.append(f"- precision: MH above base: {'yes' if p[0] > 0 else 'no'} ({p[0]:+.4f} ± {p[1]:.4f})")
        if r is not None:
            ok = r[0] >= -tie_sds * r[1]
            lines.append(f"- recall: MH not below base by more than {tie_sds:g} sd: {'yes' if ok else 'no'} "
                         f"({r[0]:+.4f} ± {r[1]:.4f})")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ figures


_CALIBRATOR_COLOURS = {"none": "#7f7f7f", "isotonic": "#1f77b4", "isotonic-capped": "#17becf", "platt": "#d62728",
                       "beta": "#2ca02c"}


def metric_against_k_png(rows: Sequence[dict[str, Any]], metric: str, title: str,
                         discriminators: Sequence[str]) -> bytes:
    """One panel per (discriminator, b): the metric against K (log axis), mean ± sd over seeds; MH per calibrator
    (solid), DRS per calibrator at that b (dashed), base (dotted black)."""
    from matplotlib.figure import Figure

    from mhgan_dist.report.figures import png_bytes

    ds = [d for d in discriminators if any(r["d"] == d for r in rows)]
    powers = sorted({float(r["odds_power"]) for r in rows if r["method"] == "mh"}, reverse=True) or [1.0]
    figure = Figure(figsize=(4.0 * len(powers), 3.2 * len(ds)))
    groups = _groups(rows, discriminators)
    lengths = sorted({int(r["chain_length"]) for r in rows})
    for i, d in enumerate(ds):
        for j, b in enumerate(powers):
            ax = figure.add_subplot(len(ds), len(powers), i * len(powers) + j + 1)
            lines: dict[tuple[str, str], list[tuple[int, list[float]]]] = {}
            for group in groups:
                head = group[0]
                if head["d"] != d or (head["method"] != "base" and float(head["odds_power"]) != b):
                    continue
                line = ("base", "") if head["method"] == "base" else (head["method"], head["calibration"])
                lines.setdefault(line, []).append((int(head["chain_length"]), [r[metric] for r in group]))
            for (method, cal), points in sorted(lines.items(), key=lambda item: (METHOD_ORDER[item[0][0]],
                                                                                   _order(item[0][1], CALIBRATOR_ORDER))):
                points.sort()
                ks = [k for k, _ in points]
                means = [float(np.mean(v)) for _, v in points]
                sds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for _, v in points]
                style = {"base": dict(color="black", linestyle=":"), "drs": dict(linestyle="--"),
                         "mh": dict(linestyle="-")}[method]
                colour = style.pop("color", _CALIBRATOR_COLOURS.get(cal))
                ax.errorbar(ks, means, yerr=sds, color=colour, marker="o", markersize=3, linewidth=1, capsize=2,
                            label="base" if method == "base" else f"{method} {cal}", **style)
            ax.set_xscale("log")
            ax.set_xticks(lengths, [str(k) for k in lengths])
            ax.minorticks_off()
            ax.set_title(f"D = {d}, b = {b:g}", fontsize=9)
            ax.set_xlabel("K", fontsize=8)
            ax.set_ylabel(metric, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
    figure.subplots_adjust(hspace=0.4)
    figure.suptitle(title, fontsize=10)
    return png_bytes(figure)


def precision_recall_png(rows: Sequence[dict[str, Any]], discriminators: Sequence[str],
                         chosen: Setting | None = None) -> bytes:
    """Each setting's mean precision against mean recall over seeds; base grey, DRS orange, MH by calibrator,
    the chosen setting starred."""
    from matplotlib.figure import Figure

    from mhgan_dist.report.figures import png_bytes

    figure = Figure(figsize=(6.0, 5.0))
    ax = figure.add_subplot(1, 1, 1)
    seen = set()
    for group in _groups(rows, discriminators):
        head = group[0]
        p = float(np.mean([r["precision"] for r in group]))
        r_ = float(np.mean([r["recall"] for r in group]))
        if head["method"] == "base":
            colour, marker, label = "#444444", "s", "base"
        elif head["method"] == "drs":
            colour, marker, label = "#ff7f0e", "^", "drs"
        else:
            colour, marker, label = _CALIBRATOR_COLOURS.get(head["calibration"]), "o", f"mh {head['calibration']}"
        ax.scatter([r_], [p], color=colour, marker=marker, s=14, alpha=0.8, label=None if label in seen else label)
        seen.add(label)
        if chosen is not None and head["method"] == "mh" and Setting.of(head) == chosen:
            ax.scatter([r_], [p], marker="*", s=160, facecolors="none", edgecolors="black", label="chosen")
    ax.set_xlabel("recall (mean over seeds)", fontsize=8)
    ax.set_ylabel("precision (mean over seeds)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)
    return png_bytes(figure)


def calibration_png(scores: Sequence[tuple[str, np.ndarray, np.ndarray]], calibrators: Sequence[str]) -> bytes:
    """Per discriminator, its raw logits of held-out real against generated calibration draws (top) and the
    reliability curves of ``calibrators`` fitted on them (bottom: predicted P(real) against the observed
    share of real samples, 10 bins; fitted and read in sample, the diagnostic view of the run's own fit).

    ``scores``: (name, real raw logits [n_real], generated raw logits [n_generated]) per discriminator.
    """
    from matplotlib.figure import Figure

    from mhgan_dist.core.calibrators import fitted_calibrator
    from mhgan_dist.quality import metrics
    from mhgan_dist.report.figures import png_bytes

    columns = max(1, len(scores))
    figure = Figure(figsize=(3.5 * columns, 6.2))
    for j, (name, real, generated) in enumerate(scores):
        real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
        both = np.concatenate([real, generated])
        labels = np.concatenate([np.ones(real.size), np.zeros(generated.size)])
        top = figure.add_subplot(2, columns, j + 1)
        edges = np.linspace(*np.percentile(both, [0.5, 99.5]), 50)
        top.hist(generated, edges, alpha=0.6, density=True, label="generated")
        top.hist(real, edges, alpha=0.6, density=True, label="real (held out)")
        top.set_title(f"D = {name}", fontsize=9)
        top.set_xlabel("raw logit", fontsize=8)
        top.tick_params(labelsize=7)
        bottom = figure.add_subplot(2, columns, columns + j + 1)
        bottom.plot([0, 1], [0, 1], ":", color="grey")
        for method in calibrators:
            fitted = fitted_calibrator(method, real, generated)
            mean_p, share, count = metrics.reliability_curve(fitted.predict_proba(both), labels, bins=10)
            seen = count > 0
            bottom.plot(mean_p[seen], share[seen], "o-", ms=3, color=_CALIBRATOR_COLOURS.get(method), label=method)
        bottom.set_xlabel("predicted P(real)", fontsize=8)
        bottom.tick_params(labelsize=7)
        if j == 0:
            top.legend(fontsize=6)
            bottom.set_ylabel("observed share real", fontsize=8)
            bottom.legend(fontsize=6)
    figure.tight_layout()
    return png_bytes(figure)


# ------------------------------------------------------------------ the study


STUDY_RESULTS = "results.jsonl"
CONFIRM_DIR = "confirm"
# Picked proposals kept per row for the sample figures: an image grid's worth, or a toy scatter's.
PICKED_HEAD = {"image": 64, "toy": 1000}

Plan = list[tuple[str, str, float, int]]
"""(method, calibration, b, K) of every row of one (D, seed)."""


@dataclass(frozen=True)
class CalibratorStudy:
    """The study's settings, as ``jobs.reproduce calibrator-study`` takes them.

    work: the study's folder. model: its kind decides the metrics.
    discriminators: "NAME=MODEL,..." (models with the same G, in preference
    order), None for joint=``model``. calibrations, odds_powers (each in (0, 1]),
    lengths: the screening grid. seeds and num_samples: per row. confirm: None
    to screen, "auto" or "D:CALIBRATION:B:K" to confirm a setting. command: the
    jobs.reproduce arguments, quoted in the results.
    """

    work: Path
    model: str
    discriminators: str | None
    calibrations: tuple[str, ...]
    odds_powers: tuple[float, ...]
    lengths: tuple[int, ...]
    seeds: tuple[int, ...]
    num_samples: int
    confirm: str | None = None
    num_actors: int | None = None
    torch_threads: int = 2
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class _StudyModel:
    """One discriminator of the study: its name, model spec, files and fingerprint."""

    name: str
    model: str
    files: ModelFiles
    fingerprint: str


@dataclass(frozen=True)
class _Pass:
    """What every row of a pass shares: the study, its kind and row scorer, and how to start Ray and log."""

    study: CalibratorStudy
    kind: str
    scorer: RowScorer
    start_ray: Callable[[], object]
    log: Callable[[str], None]


def run_study(study: CalibratorStudy, *, start_ray: Callable[[], object], log: Callable[[str], None]) -> None:
    """Screens the grid (or confirms one setting) into ``study.work``, resuming from the rows already there,
    writes the tables and figures, and prints the choice (or the checks) and where the results are."""
    kind, models = _study_models(study)
    names = [m.name for m in models]
    metric = primary_metric(kind)
    scorer = row_scorer(models[0].files)
    rule = SELECTION_RULE.format(metric="FID" if metric == "fid" else "JS (nats)", sds=TIE_SDS,
                                 discriminators=", ".join(names))
    study.work.mkdir(parents=True, exist_ok=True)
    run = _Pass(study, kind, scorer, start_ray, log)
    if study.confirm is None:
        _screening(run, models, metric, rule)
    else:
        _confirmation(run, models, metric, rule)


def _screening(run: _Pass, models: list[_StudyModel], metric: str, rule: str) -> None:
    study, work = run.study, run.study.work
    names, seeds = [m.name for m in models], study.seeds
    rows = _study_pass(run, work, "screening", models, {m.name: _screening_plan(study) for m in models})
    chosen, candidates = choose_setting(rows, metric, names)
    (work / "selection.json").write_text(json.dumps({"rule": rule, "metric": metric, "chosen": chosen.to_json(),
                                                     "candidates": [c.to_json() for c in candidates]},
                                                    indent=1) + "\n")
    (work / f"{metric}-against-k.png").write_bytes(metric_against_k_png(
        rows, metric, f"{metric} against K (mean ± sd over seeds {', '.join(map(str, seeds))})", names))
    figure_lines = [f"![{metric} against K]({metric}-against-k.png)"]
    if metric == "fid":
        (work / "precision-recall.png").write_bytes(precision_recall_png(rows, names, chosen))
        figure_lines.append("![precision against recall](precision-recall.png)")
    (work / "calibration.png").write_bytes(calibration_png(_calibration_scores(rows, names, seeds[0]),
                                                           ("none", "isotonic", "beta")))
    figure_lines.append(f"![each D's raw logits and reliability curves, seed {seeds[0]}](calibration.png)")
    ties = [c for c in candidates if c.ties]
    lines = _study_header("Calibrator study: screening", study, models)
    lines += [rule, "", f"**Chosen: {chosen.label()}** (best mean: {candidates[0].setting.label()}, "
              f"{candidates[0].mean:.4g}).", "",
              f"Tied with the best ({len(ties)}): " + "; ".join(
                  f"{c.setting.label()} ({c.mean:.4g}, {c.diff_mean:+.3g} ± {c.diff_sd:.3g})" for c in ties), "",
              _study_timings(rows), "", screening_markdown(rows, run.kind, names, run.scorer.class_names, chosen),
              *figure_lines, ""]
    (work / "results.md").write_text("\n".join(lines))
    print(f"chosen: {chosen.label()}")
    print(f"results: {work / 'results.md'}")


def _confirmation(run: _Pass, models: list[_StudyModel], metric: str, rule: str) -> None:
    study = run.study
    setting, origin = _confirmed_setting(study, [m.name for m in models], metric)
    print(f"confirming: {setting.label()} ({origin})")
    root = study.work / CONFIRM_DIR
    root.mkdir(parents=True, exist_ok=True)
    chosen_model = next(m for m in models if m.name == setting.discriminator)
    rows = _study_pass(run, root, "confirmation", [chosen_model],
                       {setting.discriminator: _confirmation_plan(setting)})
    figure_lines = _confirmation_samples(root, rows, setting, chosen_model, run.kind, study.torch_threads)
    checks = confirmation_markdown(rows, run.kind, setting, run.scorer.class_names)
    lines = _study_header("Calibrator study: confirmation", study, [chosen_model])
    lines += [f"Setting: **{setting.label()}**, {origin}.", "", rule, "", _study_timings(rows), "",
              checks, *figure_lines, ""]
    (root / "results.md").write_text("\n".join(lines))
    print(checks[checks.index("Checks"):].strip())
    print(f"results: {root / 'results.md'}")


def _confirmed_setting(study: CalibratorStudy, names: list[str], metric: str) -> tuple[Setting, str]:
    """(the setting to confirm, where it comes from): the rule's choice from the screening, or the one given."""
    if study.confirm == "auto":
        screening = study.work / STUDY_RESULTS
        if not screening.exists():
            raise ConfigError(f"--confirm auto needs the screening's {screening}; run the screening first")
        setting, _ = choose_setting([r for r in ResultsLog(screening).values() if r.get("stage") == "screening"
                                     and r["d"] in names], metric, names)
        return setting, f"chosen by the selection rule from the screening in {screening}"
    parts = str(study.confirm).split(":")
    try:
        d, cal, b, k = parts
        setting = Setting(d, cal, float(b), int(k))
    except ValueError:
        raise ConfigError(f"--confirm takes auto or D:CALIBRATION:B:K, not {study.confirm!r}") from None
    if d not in names or cal not in CALIBRATOR_ORDER or not 0.0 < setting.odds_power <= 1.0 \
            or setting.chain_length < 1:
        raise ConfigError(f"--confirm {study.confirm}: D must be one of {', '.join(names)}, the calibration one "
                          f"of {', '.join(CALIBRATOR_ORDER)}, b in (0, 1] and K >= 1")
    return setting, "given on the command line"


def _study_models(study: CalibratorStudy) -> tuple[str, list[_StudyModel]]:
    """(kind, the discriminators in preference order); every one must be of the model's kind."""
    from mhgan_dist.models import model_fingerprint, resolve_model

    kind, _ = model_kind(resolve_model(study.model))
    pairs = []
    for part in (study.discriminators or f"joint={study.model}").split(","):
        name, sep, model = part.strip().partition("=")
        if not sep or not name or not model or any(c in name for c in "|:/ "):
            raise ConfigError(f"--discriminators takes NAME=MODEL pairs (names without | : / or spaces), not {part!r}")
        pairs.append((name, model))
    if len({name for name, _ in pairs}) < len(pairs):
        raise ConfigError("--discriminators names must differ")
    models = []
    for name, model in pairs:
        files = resolve_model(model)
        other, _ = model_kind(files)
        if other != kind:
            raise ConfigError(f"discriminator {name} ({model}) is a {other} model, not a {kind} one like "
                              f"--model {study.model}")
        models.append(_StudyModel(name, model, files, model_fingerprint(files)))
    unknown = sorted(set(study.calibrations) - set(CALIBRATOR_ORDER))
    if unknown:
        raise ConfigError(f"--calibrations must be among {', '.join(CALIBRATOR_ORDER)}, not {', '.join(unknown)}")
    for b in study.odds_powers:
        if not 0.0 < b <= 1.0:
            raise ConfigError(f"--odds-powers must lie in (0, 1], got {b:g}")
    return kind, models


def _screening_plan(study: CalibratorStudy) -> Plan:
    """Every screening row of one (D, seed): base at each K, DRS per calibrator (b = 1), MH per calibrator and b."""
    plan = []
    for k in sorted(set(study.lengths)):
        plan.append(("base", "none", 1.0, k))
        plan += [("drs", cal, 1.0, k) for cal in study.calibrations]
        plan += [("mh", cal, float(b), k) for cal in study.calibrations for b in study.odds_powers]
    return plan


def _confirmation_plan(setting: Setting) -> Plan:
    """Base, the chosen MH, DRS as the paper runs it (isotonic, b = 1) and DRS with the chosen calibrator and b."""
    k, cal, b = setting.chain_length, setting.calibration, setting.odds_power
    plan = [("base", "none", 1.0, k), ("mh", cal, b, k), ("drs", "isotonic", 1.0, k), ("drs", cal, b, k)]
    return list(dict.fromkeys(plan))


def _drs_pilot(path: Path, stored: StoredRun, worker: ProposalWorker, log: Callable[[str], None]) -> float:
    """The source run's DRS pilot maximum, scored once and kept beside the run."""
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("model_fingerprint") == stored.model_fingerprint and cached.get("draws") == stored.drs_pilot_draws:
            return float(cached["pilot_max_raw"])
    began = time.perf_counter()
    value = stored.pilot_max_raw(worker)
    seconds = time.perf_counter() - began
    path.write_text(json.dumps({"pilot_max_raw": value, "draws": stored.drs_pilot_draws, "seconds": seconds,
                                "model_fingerprint": stored.model_fingerprint}) + "\n")
    log(f"scored {stored.drs_pilot_draws:,} DRS pilot draws ({seconds:.1f} s)")
    return value


def _study_pass(run: _Pass, root: Path, stage: str, models: list[_StudyModel],
                plans: dict[str, Plan]) -> list[dict[str, Any]]:
    """The rows of every planned (D, seed) in ROOT/results.jsonl, in plan order; the ones not there yet are made.

    Per (D, seed): one pipeline MH run at the plan's largest K (reused when
    complete) makes the proposals; every row re-picks them in this process.
    """
    from mhgan_dist.pipeline.local_repick import StoredRun
    from mhgan_dist.studies.runs import complete_run, ensure_run, run_config

    study, log = run.study, run.log
    results = ResultsLog(root / STUDY_RESULTS)
    planned = []
    n = study.num_samples
    for model in models:
        plan = plans.get(model.name, [])
        if not plan:
            continue
        longest = max(k for *_, k in plan)
        for seed in study.seeds:
            todo = []
            for method, cal, b, k in plan:
                key = row_key(model.name, seed, method, cal, b, k, n)
                planned.append(key)
                if key not in results:
                    todo.append((key, method, cal, b, k))
                elif results.rows[key].get("model_fingerprint") != model.fingerprint:
                    raise ConfigError(f"{results.path} holds results of another model as D={model.name}; "
                                      "use another --work")
            if not todo:
                continue
            source = root / "runs" / model.name / f"seed-{seed}" / "mh"
            if complete_run(source) is None:
                run.start_ray()
            ensure_run(run_config(model.model, source, picker="mh", seed=seed, num_samples=n, chain_length=longest,
                                  num_actors=study.num_actors), log)
            stored = StoredRun.open(str(source))
            _make_rows(run, results, stage, model, seed, source, stored, todo)
    return [results.rows[key] for key in dict.fromkeys(planned)]


def _make_rows(run: _Pass, results: ResultsLog, stage: str, model: _StudyModel, seed: int, source: Path,
               stored: StoredRun, todo: list[tuple[str, str, str, float, int]]) -> None:
    """Re-picks ``source``'s proposals for every (key, method, calibration, b, K) of ``todo``, scores the
    samples, and appends each row to ``results`` as it finishes."""
    from mhgan_dist.pipeline.local_repick import PickSetting

    n = run.study.num_samples
    head = PICKED_HEAD["toy" if run.kind in TOY_KINDS else "image"]
    worker = stored.worker(model.model, run.study.torch_threads)
    pilot = None
    for key, method, cal, b, k in todo:
        began = time.perf_counter()
        if method == "drs" and pilot is None:
            pilot = _drs_pilot(source.parent / "drs-pilot.json", stored, worker, run.log)
            began = time.perf_counter()
        pick = stored.pick(PickSetting(method, cal, k, b), n, pilot)
        picked = time.perf_counter()
        samples = worker.generate(pick.proposal_index)
        generated = time.perf_counter()
        quality = run.scorer(samples)
        scored = time.perf_counter()
        row = {"key": key, "stage": stage, "d": model.name, "model": model.model,
               "model_fingerprint": model.fingerprint, "seed": seed, "method": method, "calibration": cal,
               "odds_power": b, "chain_length": k, "num_samples": n, "source": str(source), **quality,
               "acceptance_rate": pick.acceptance_rate, "restart_rate": pick.restart_rate,
               "no_accept_share": pick.no_accept_share,
               "seconds": {"pick": picked - began, "generate": generated - picked, "metrics": scored - generated},
               "picked_head": pick.proposal_index[:head].tolist()}
        results.append(row)
        metric = "fid" if "fid" in quality else "js_nats"
        run.log(f"D={model.name} seed {seed} {method} {cal} b={b:g} K={k}: {metric} {quality[metric]:.4g}, "
                f"acceptance {pick.acceptance_rate:.3f}, restarts {pick.restart_rate:.3f} "
                f"({scored - began:.1f} s)")


def _study_timings(rows: list[dict[str, Any]]) -> str:
    """Seconds per part: the proposal runs (their manifests), DRS pilots, picks, sample rebuilds, metrics."""
    from mhgan_dist.studies.runs import recorded_run

    sources = sorted({r["source"] for r in rows})
    proposal = 0.0
    pilots = 0.0
    for source in sources:
        recorded = recorded_run(Path(source))
        if recorded is not None:
            proposal += float(recorded.timings.get("total_s") or 0.0)
        pilot = Path(source).parent / "drs-pilot.json"
        if pilot.exists():
            pilots += float(json.loads(pilot.read_text()).get("seconds") or 0.0)
    parts = {name: sum(r["seconds"][name] for r in rows) for name in ("pick", "generate", "metrics")}
    return (f"Time: {len(sources)} proposal run(s) {proposal:,.0f} s (pipeline, from their manifests); DRS pilot "
            f"draws {pilots:,.0f} s; {len(rows)} rows: picks {parts['pick']:,.1f} s, sample rebuilds "
            f"{parts['generate']:,.1f} s, metrics {parts['metrics']:,.1f} s.")


def _calibration_scores(rows: list[dict[str, Any]], names: list[str], seed: int
                        ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(D, real raw logits, generated raw logits) of each D's proposal run on ``seed``, from its saved scores."""
    from mhgan_dist.pipeline.local_repick import StoredRun

    out = []
    for name in names:
        stored = StoredRun.open(str(next(r["source"] for r in rows if r["d"] == name and r["seed"] == seed)))
        out.append((name, stored.real_raw, stored.generated_raw))
    return out


def _study_header(title: str, study: CalibratorStudy, models: list[_StudyModel]) -> list[str]:
    lines = [f"# {title}", "", f"Command: `python -m jobs.reproduce {' '.join(study.command)}`",
             "", f"Model kind of --model {study.model}; n = {study.num_samples:,} samples per row; seeds "
             f"{', '.join(map(str, study.seeds))}.", "", "| D | model | fingerprint |", "|---|---|---|"]
    lines += [f"| {m.name} | {m.model} | `{m.fingerprint[:16]}` |" for m in models]
    return lines + [""]


def _confirmation_samples(root: Path, rows: list[dict[str, Any]], setting: Setting, model: _StudyModel, kind: str,
                          threads: int) -> list[str]:
    """samples.png: base beside the chosen MH on the first seed's proposals, rebuilt from the rows' picks."""
    from mhgan_dist.pipeline.local_repick import StoredRun
    from mhgan_dist.report import figures
    from mhgan_dist.training import datasets

    seed = min(r["seed"] for r in rows)
    base = next(r for r in rows if r["seed"] == seed and r["method"] == "base")
    mh = next(r for r in rows if r["seed"] == seed and r["method"] == "mh")
    worker = StoredRun.open(base["source"]).worker(model.model, threads)
    panels = [(f"base (seed {seed})", worker.generate(np.asarray(base["picked_head"], dtype=np.int64))),
              (f"MH: {setting.label()}", worker.generate(np.asarray(mh["picked_head"], dtype=np.int64)))]
    if kind == "grid2d":
        png = figures.scatter_panels(panels, modes=datasets.GRID_MODES)
    elif kind == "mixture1d":
        png = figures.histogram_panels([(title, x[:, 0]) for title, x in panels], modes=datasets.MIXTURE_MODES)
    else:
        png = figures.image_grid_panels(panels)
    (root / "samples.png").write_bytes(png)
    return ["![base beside the chosen MH](samples.png)"]
