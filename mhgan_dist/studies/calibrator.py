"""The calibrator study's bookkeeping: result rows, their resumable log, the selection rule, tables and figures.

A row is one (discriminator, seed, method, calibration, b, K, n) re-pick of a
stored proposal run with its sample-quality metrics (see
``jobs.reproduce calibrator-study``). This module holds what does not need a
model: the append-only results log a re-run resumes from
(:class:`ResultsLog`), the selection rule (:func:`choose_setting`, fixed before
any result exists: :data:`SELECTION_RULE`), and the Markdown tables and PNG
figures of the results. :class:`QualityScorer` turns samples into a row's
metrics for each kind of model.

numpy, matplotlib (Agg, no pyplot) and the project's metric modules; no Ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATOR_ORDER",
    "SELECTION_RULE",
    "TIE_SDS",
    "Setting",
    "Candidate",
    "row_key",
    "ResultsLog",
    "QualityScorer",
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


class QualityScorer:
    """Sample-quality metrics of one model kind: ``scorer(samples) -> dict``.

    grid2d, mixture1d: the paper's mode metrics (JS in nats and bits, HQ share,
    modes recovered, per-mode counts). fashion: the shipped classifier's scores
    against the Fashion-MNIST test split (FID, IS analogue, precision, recall,
    density, coverage, class mix; mhgan_dist.quality.scores.classifier_quality).
    digits: the same scores with the shipped digit classifier, against the
    model's held-out real images. ``class_names`` names the class-mix entries.
    """

    def __init__(self, kind: str, dataset: str | None, real_path: str | None, sample_shape: tuple[int, ...],
                 device: str = "cpu") -> None:
        from mhgan_dist.training import datasets
        from mhgan_dist.quality import metrics
        from mhgan_dist.quality import networks
        from mhgan_dist.errors import ConfigError
        from mhgan_dist.models import load_real_samples

        self.kind = kind
        self.class_names: tuple[str, ...] = ()
        self._scorer = None
        if kind in ("grid2d", "mixture1d"):
            return
        if kind == "fashion":
            self._scorer = networks.load_fashion_classifier(device=device)
            reference = networks.load_reference_features()
            self._reference = (reference.features, reference.mean, reference.cov)
            self.class_names = tuple(datasets.FASHION_CLASSES)
            return
        if kind == "image" and dataset == "digits":
            if real_path is None:
                raise ConfigError("the digits model has no held-out real samples to score against")
            self._scorer = networks.load_digit_classifier(device=device)
            _, features = self._scorer.score(load_real_samples(real_path, sample_shape))
            mean, cov = metrics.gaussian_statistics(features)
            self._reference = (features, mean, cov)
            self.class_names = tuple(str(i) for i in range(self._scorer.num_classes))
            return
        raise ConfigError(f"the calibrator study scores grid2d, mixture1d, fashion and digits models, not a {kind!r} "
                          f"model of dataset {dataset!r}")

    def __call__(self, samples: np.ndarray) -> dict[str, Any]:
        from mhgan_dist.quality.scores import classifier_quality, toy_quality

        if self._scorer is None:
            quality = toy_quality(self.kind, samples)
            counts = np.asarray(quality["counts"], dtype=np.float64)
            return {**quality, "shares": (counts / counts.sum()).tolist()}
        probs, features = self._scorer.score(samples)
        # No bootstrap: the study's spreads come from seeds, and FID's bootstrap is most of the time.
        quality = classifier_quality(probs, features, *self._reference, rounds=0)
        counts = np.asarray(quality["class_counts"], dtype=np.float64)
        keep = ("n", "fid", "inception_score", "precision", "recall", "density", "coverage", "knn_n",
                "class_js_nats", "class_js_bits", "classes_recovered", "class_counts")
        return {**{k: quality[k] for k in keep}, "shares": (counts / counts.sum()).tolist()}


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

    from mhgan_dist.report.figures import _png

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
    return _png(figure)


def precision_recall_png(rows: Sequence[dict[str, Any]], discriminators: Sequence[str],
                         chosen: Setting | None = None) -> bytes:
    """Each setting's mean precision against mean recall over seeds; base grey, DRS orange, MH by calibrator,
    the chosen setting starred."""
    from matplotlib.figure import Figure

    from mhgan_dist.report.figures import _png

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
    return _png(figure)


def calibration_png(scores: Sequence[tuple[str, np.ndarray, np.ndarray]], calibrators: Sequence[str]) -> bytes:
    """Per discriminator, its raw logits of held-out real against generated calibration draws (top) and the
    reliability curves of ``calibrators`` fitted on them (bottom: predicted P(real) against the observed
    share of real samples, 10 bins; fitted and read in sample, the diagnostic view of the run's own fit).

    ``scores``: (name, real raw logits [n_real], generated raw logits [n_generated]) per discriminator.
    """
    from matplotlib.figure import Figure

    from mhgan_dist.core import calibrators
    from mhgan_dist.quality import metrics
    from mhgan_dist.report.figures import _png

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
            fitted = calibrators.make_calibrator(method).fit(real, generated)
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
    return _png(figure)
