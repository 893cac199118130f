"""Quality against cost: the paper's independent chains (K proposals per sample) and long thinned chains.

For each problem and seed, one pool of proposals is drawn as the pipeline
draws them (``streams.latents(seed, Stream.PROPOSALS, ...)``), scored by D and
calibrated (:attr:`Settings.calibration`: a calibrator fitted by name on held-out
real samples against as many generated draws from ``Stream.CALIBRATION``, or a
saved .json), then tempered and clipped as the chains compare them. Every
configuration picks from that same pool: base (the first proposal of each
independent chain), independent chains of K proposals, and thinned chains
(:mod:`mhgan_dist.core.thinning`) of every T-th step, T given or chosen for the
repeat budget. Quality: exact1d (G = N(0, 1), data N(1, 1), exact D log-odds
x - 0.5, no model): KS distance to N(1, 1); model problems: the scores
:func:`mhgan_dist.quality.scores.scorer_for` chooses for the model's kind.
:func:`run_tradeoff` writes tradeoff.json (every row), tradeoff.md (mean +-
standard error over seeds) and the plot. G and D run in this process; no Ray.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mhgan_dist.core import calibrators, pickers, streams, thinning
from mhgan_dist.core.streams import Stream
from mhgan_dist.errors import ConfigError
from mhgan_dist.quality import metrics
from mhgan_dist.quality.scores import QualityScorer, model_kind, scorer_for

__all__ = ["PROBLEMS", "Settings", "Pool", "quality_of", "problem_label", "measure_seed", "summarise",
           "matching_cost", "markdown_table", "plot", "run_tradeoff"]

PROBLEMS = ("exact1d", "grid2d", "digits", "fashion")
_QUALITY = {  # problem -> (headline metric, lower is better, label)
    "exact1d": ("ks", True, "KS distance to N(1,1)"),
    "grid2d": ("js_nats", True, "JS divergence (nats)"),
    "digits": ("fid", True, "classifier-feature FID"),
    "fashion": ("fid", True, "classifier-feature FID"),
}


def quality_of(label: str) -> tuple[str, bool, str]:
    """The headline metric of a problem label ("grid2d" or "grid2d, capped calibration")."""
    return _QUALITY[label.split(",")[0]]


def problem_label(problem: str, calibration_method: str, odds_power: float = 1.0,
           odds_cap_quantile: float | None = None) -> str:
    """problem, then what differs from the paper's settings: "grid2d, beta calibration, b=0.5"."""
    parts = [problem]
    if problem != "exact1d" and calibration_method != "isotonic":
        parts.append("capped calibration" if calibration_method == "isotonic-capped"
                     else "saved calibration" if calibration_method.endswith(".json")
                     else f"{calibration_method} calibration")
    if odds_power != 1.0:
        parts.append(f"b={odds_power:g}")
    if odds_cap_quantile is not None:
        parts.append(f"odds capped at q={odds_cap_quantile:g}")
    return ", ".join(parts)


# ------------------------------------------------------------------ problems


@dataclass
class Pool:
    """One seed's proposals: calibrated log-odds of the pool and of the other draws, and the metrics."""

    logits: np.ndarray  # float64 [num_proposals], calibrated
    pilot_logits: np.ndarray  # float64 [n], calibrated generated draws used by neither the chains nor the fit
    real_logits: np.ndarray  # float64 [num_real], calibrated held-out real samples (the chains' starts)
    samples_of: Callable[[np.ndarray], np.ndarray]  # proposal indices -> samples
    quality: Callable[[np.ndarray], dict[str, float]]
    seconds: float
    data: Callable[[int], np.ndarray] | None = None  # n independent draws of the data distribution
    generated_logits: np.ndarray | None = None  # float64, calibrated generated calibration draws (the odds cap)

    def tempered(self, odds_power: float, odds_cap_quantile: float | None) -> "Pool":
        """This pool with every log-odds as the chains compare them (pickers.target_logits)."""
        if odds_power == 1.0 and odds_cap_quantile is None:
            return self
        cap = None
        if odds_cap_quantile is not None:
            if self.generated_logits is None:
                raise ConfigError("this problem has no generated calibration draws to take an odds cap from.")
            cap = pickers.odds_cap_logit(self.generated_logits, odds_cap_quantile)
        logits = [pickers.target_logits(v, odds_power, cap) for v in (self.logits, self.pilot_logits, self.real_logits)]
        return dataclasses.replace(self, logits=logits[0], pilot_logits=logits[1], real_logits=logits[2])


def _exact1d_pool(seed: int, num_proposals: int, num_real: int, pilot_draws: int) -> Pool:
    from scipy import stats

    began = time.perf_counter()
    x = streams.latents(seed, Stream.PROPOSALS, 0, num_proposals, 1)[:, 0].astype(np.float64)
    real = 1.0 + np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1001,))).standard_normal(num_real)
    pilot = streams.latents(seed, Stream.THIN_PILOT, 0, pilot_draws, 1)[:, 0].astype(np.float64)
    target = stats.norm(1.0, 1.0).cdf
    generated = streams.latents(seed, Stream.CALIBRATION, 0, num_real, 1)[:, 0].astype(np.float64)
    return Pool(
        logits=x - 0.5,
        pilot_logits=pilot - 0.5,
        real_logits=real - 0.5,
        samples_of=lambda idx: x[idx],
        quality=lambda s: {"ks": float(stats.kstest(s.reshape(-1), target).statistic)},
        seconds=time.perf_counter() - began,
        data=lambda n: 1.0 + np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1002,))).standard_normal(n),
        generated_logits=generated - 0.5,
    )


def _calibrate(method: str, real_raw: np.ndarray, generated_raw: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Raw -> calibrated log-odds: a calibrator fitted by name, as the pipeline fits it, or a saved .json."""
    from mhgan_dist.pipeline.calibration import load_calibration_file

    saved = load_calibration_file(method) if method.endswith(".json") else None
    fitted = calibrators.fitted_calibrator(method, real_raw, generated_raw, saved)
    return lambda raw: fitted.predict_logit(np.asarray(raw, dtype=np.float64))


def _model_pool(name: str, seed: int, num_proposals: int, s: "Settings") -> Pool:
    import torch

    from mhgan_dist.models import load_pair, load_real_samples, resolve_model

    torch.set_num_threads(s.threads)
    began = time.perf_counter()
    files = resolve_model(name)
    pair = load_pair(files, "cpu")
    real = load_real_samples(files.real, pair.sample_shape)
    batch = s.batch

    @torch.inference_mode()
    def score(stream: Stream, start: int, stop: int) -> np.ndarray:
        out = np.empty(stop - start, dtype=np.float32)
        for a in range(start, stop, batch):
            b = min(stop, a + batch)
            z = torch.from_numpy(streams.latents(seed, stream, a, b, pair.latent_dim))
            out[a - start : b - start] = pair.discriminator(pair.generator(z)).numpy()
        return out

    @torch.inference_mode()
    def score_real() -> np.ndarray:
        return np.concatenate([pair.discriminator(torch.from_numpy(real[a : a + batch])).numpy()
                               for a in range(0, len(real), batch)])

    @torch.inference_mode()
    def samples_of(indices: np.ndarray) -> np.ndarray:
        z = streams.latents_at(seed, Stream.PROPOSALS, indices, pair.latent_dim)
        return np.concatenate([pair.generator(torch.from_numpy(z[a : a + batch])).numpy()
                               for a in range(0, len(z), batch)])

    def cached(tag: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if s.cache is None:
            return compute()
        path = Path(s.cache) / f"{name}-{pair.fingerprint[:12]}-seed{seed}-{tag}.npy"
        if path.exists():
            return np.load(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        value = compute()
        np.save(path, value)
        return value

    real_raw = cached("real", score_real)
    generated_raw = cached(f"calibration{real_raw.size}", lambda: score(Stream.CALIBRATION, 0, real_raw.size))
    pilot_raw = cached(f"pilot{s.pilot_draws}", lambda: score(Stream.THIN_PILOT, 0, s.pilot_draws))
    raw = cached(f"proposals{num_proposals}", lambda: score(Stream.PROPOSALS, 0, num_proposals))
    to_logit = _calibrate(s.calibration, real_raw, generated_raw)
    data = None
    if name == "grid2d":
        from mhgan_dist.training.datasets import grid2d

        data = lambda n: grid2d(n, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1002,))))  # noqa: E731
    return Pool(
        logits=to_logit(raw),
        pilot_logits=to_logit(pilot_raw),
        real_logits=to_logit(real_raw),
        samples_of=samples_of,
        quality=_QUALITY_NUMBERS[name](scorer_for(*model_kind(files), real=real, rounds=0)),
        seconds=time.perf_counter() - began,
        data=data,
        generated_logits=to_logit(generated_raw),
    )


def _grid_numbers(scorer: QualityScorer) -> Callable[[np.ndarray], dict[str, Any]]:
    """JS (nats), HQ share, modes recovered and the mode histogram of grid2d samples."""
    def quality(samples: np.ndarray) -> dict[str, Any]:
        m = scorer(samples)
        return {"js_nats": m["js_nats"], "hq_share": m["hq_share"], "modes": float(m["modes_recovered"]),
                "counts": m["counts"]}

    return quality


def _digits_numbers(scorer: QualityScorer) -> Callable[[np.ndarray], dict[str, float]]:
    """The digit classifier's score (IS-style, one split) and the Fréchet distance of its features to the
    held-out real digits'."""
    def quality(samples: np.ndarray) -> dict[str, float]:
        probs, features = scorer.network.score(samples)
        return {"classifier_score": metrics.inception_score(probs)[0],
                "fid": metrics.fid(features, scorer.reference.features)}

    return quality


def _fashion_numbers(scorer: QualityScorer) -> Callable[[np.ndarray], dict[str, float]]:
    """The classifier-feature scores against the Fashion-MNIST test split, without bootstrap."""
    keep = ("fid", "inception_score", "precision", "recall", "density", "coverage", "class_js_nats")

    def quality(samples: np.ndarray) -> dict[str, float]:
        scores = scorer(samples)
        return {k: float(scores[k]) for k in keep}

    return quality


# What each model problem's rows hold, from the scorer of the model's kind.
_QUALITY_NUMBERS = {"grid2d": _grid_numbers, "digits": _digits_numbers, "fashion": _fashion_numbers}


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Settings:
    """What one trade-off measurement compares (its fields are tradeoff.json's ``settings``).

    problems: of :data:`PROBLEMS`. outputs: output samples per configuration and
    seed, ``outputs_per_chain`` of them per thinned chain. ks: the independent
    chains' K; thins: the thinned chains' T; budget: the repeat share auto T
    aims at. threads, batch: torch CPU threads and G and D batch size.
    pilot_draws: generated draws (Stream.THIN_PILOT) that estimate the repeat
    share. calibration: a calibrator's name or a saved .json. cache: a folder
    keeping the raw D scores for re-use, or None. odds_power (b in (0, 1]) and
    odds_cap_quantile: the chains' tempering and clipping.
    """

    problems: tuple[str, ...]
    seeds: tuple[int, ...]
    outputs: int
    outputs_per_chain: int
    ks: tuple[int, ...]
    thins: tuple[int, ...]
    budget: float
    threads: int
    batch: int
    pilot_draws: int = 20_000
    calibration: str = "isotonic"
    cache: str | None = None
    odds_power: float = 1.0
    odds_cap_quantile: float | None = None

    def check(self) -> None:
        """ConfigError (one sentence) for an unknown problem or calibration, or odds options out of range."""
        unknown = [p for p in self.problems if p not in PROBLEMS]
        if unknown:
            raise ConfigError(f"unknown problem {unknown[0]!r}; choose from {', '.join(PROBLEMS)}.")
        if self.calibration not in calibrators.CALIBRATORS and not self.calibration.endswith(".json"):
            raise ConfigError(f"--calibration must be one of {', '.join(sorted(calibrators.CALIBRATORS))} "
                              f"or a saved calibration .json, not {self.calibration!r}.")
        try:
            pickers.target_logits(np.zeros(1), self.odds_power)
            if self.odds_cap_quantile is not None:
                pickers.odds_cap_logit(np.zeros(1), self.odds_cap_quantile)
        except ValueError as exc:
            raise ConfigError(f"--odds-power or --odds-cap-quantile: {exc}.") from None

    def fast(self) -> "Settings":
        """The small run tests use: exact1d only, 1,024 outputs, 2 seeds, short K and T lists; these
        settings' budget, batch and odds options."""
        return Settings(("exact1d",), (0, 1), 1024, 64, (10, 40), (1, 4, 16), self.budget, 1, self.batch,
                        4096, odds_power=self.odds_power, odds_cap_quantile=self.odds_cap_quantile)


def measure_seed(problem: str, seed: int, s: Settings, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Rows of one problem and seed: base, independent chains per K, thinned chains per T and auto T."""
    k_max = max(s.ks)
    chains = s.outputs
    if problem == "exact1d":
        pool = _exact1d_pool(seed, chains * k_max, 20_000, s.pilot_draws)
    else:
        pool = _model_pool(problem, seed, chains * k_max, s)
    pool = pool.tempered(s.odds_power, s.odds_cap_quantile)
    log(f"{problem} seed {seed}: {pool.logits.size:,} proposals scored in {pool.seconds:.0f} s")
    rows: list[dict[str, Any]] = []
    blocks = pool.logits.reshape(chains, k_max)
    label = problem_label(problem, s.calibration, s.odds_power, s.odds_cap_quantile)

    def row(mode: str, param: int | None, picked_global: np.ndarray, per_output: float, **extra: Any) -> None:
        quality = pool.quality(pool.samples_of(picked_global))
        rows.append({"problem": label, "seed": seed, "mode": mode, "param": param,
                     "proposals_per_output": per_output, "outputs": int(picked_global.size), **quality, **extra})

    if pool.data is not None:
        rows.append({"problem": label, "seed": seed, "mode": "data", "param": None, "outputs": s.outputs,
                     **pool.quality(pool.data(s.outputs))})
    row("base", 1, np.arange(chains, dtype=np.int64) * k_max, 1.0, repeat_share=0.0)

    starts = pool.real_logits[streams.chain_integers(seed, Stream.REAL_INIT, 0, chains, pool.real_logits.size)]
    exps = streams.chain_exponentials(seed, Stream.MH_STEPS, 0, chains, k_max)
    for k in s.ks:
        began = time.perf_counter()
        result = pickers.mh(
            blocks[:, :k], starts, exps[:, :k],
            lambda rows_, k=k: streams.chain_exponentials_at(seed, Stream.MH_RESTART, rows_, k - 1),
        )
        seconds = time.perf_counter() - began
        row("independent", k, np.arange(chains, dtype=np.int64) * k_max + result.picked, float(k),
            repeat_share=0.0, restart_share=float(result.restarted.mean()), chain_seconds=seconds)

    try:
        auto_thin, auto_share = thinning.choose_thin(pool.pilot_logits, s.budget,
                                                     calibrated_real_logits=pool.real_logits)
        auto = [(auto_thin, "thinned-auto")]
        log(f"  auto T = {auto_thin} (expected repeat share {auto_share:.4f})")
    except ConfigError as exc:
        auto = []
        log(f"  auto T: {exc}")
    log(f"  acceptance at the target {thinning.mean_acceptance(pool.pilot_logits):.3f}")
    for t, mode in [*((t, "thinned") for t in s.thins), *auto]:
        plan = thinning.plan_chains(s.outputs, t, s.outputs_per_chain)
        length = plan.chain_length
        if plan.num_proposals > pool.logits.size:
            log(f"  T={t}: needs {plan.num_proposals:,} proposals, the pool has {pool.logits.size:,}; skipped")
            continue
        c = plan.num_chains
        logits = pool.logits[: c * length].reshape(c, length)
        t_starts = pool.real_logits[streams.chain_integers(seed, Stream.REAL_INIT, 0, c, pool.real_logits.size)]
        began = time.perf_counter()
        result = thinning.thinned_chains(
            logits, t_starts, streams.chain_exponentials(seed, Stream.THIN_STEPS, 0, c, length), t,
            lambda rows_, t=t: streams.chain_exponentials_at(seed, Stream.THIN_RESTART, rows_, t - 1),
        )
        seconds = time.perf_counter() - began
        picked = (np.arange(c, dtype=np.int64)[:, None] * length + result.picked).reshape(-1)[: s.outputs]
        tally = result.tally()
        estimate = thinning.estimate_repeat_share(pool.pilot_logits, t, pool.real_logits)
        row(mode, t, picked, plan.proposals_per_output,
            repeat_share=tally.share, repeat_share_se=tally.standard_error,
            expected_repeat_share=estimate.share,
            expected_at_target=estimate.at_target, expected_at_target_se=estimate.at_target_se,
            expected_at_data=estimate.at_data, expected_at_data_se=estimate.at_data_se,
            restart_share=float(result.restarted.mean()), chain_seconds=seconds)
    return rows


# ---------------------------------------------------------------- summaries


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan)


def _order(label: str) -> tuple[int, str]:
    return PROBLEMS.index(label.split(",")[0]), label


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error over seeds per (problem, mode, param); paired difference to the largest K."""
    out = []
    keys = sorted({(r["problem"], r["mode"], r["param"]) for r in rows if r["mode"] != "thinned-auto"},
                  key=lambda k: (_order(k[0]), ["data", "base", "independent", "thinned"].index(k[1]), k[2] or 0))
    keys += sorted({(r["problem"], "thinned-auto", None) for r in rows if r["mode"] == "thinned-auto"},
                   key=lambda k: _order(k[0]))
    keys.sort(key=lambda k: _order(k[0]))  # stable: each problem's rows stay in the order above
    for problem, mode, param in keys:
        group = [r for r in rows if r["problem"] == problem and r["mode"] == mode
                 and (mode == "thinned-auto" or r["param"] == param)]
        metric, _, _ = quality_of(problem)
        reference = {r["seed"]: r for r in rows if r["problem"] == problem and r["mode"] == "independent"
                     and r["param"] == max(x["param"] for x in rows if x["problem"] == problem and x["mode"] == "independent")}
        entry: dict[str, Any] = {"problem": problem, "mode": mode, "param": param, "seeds": len(group)}
        if mode == "thinned-auto":
            entry["thin_per_seed"] = [r["param"] for r in group]
        if all("counts" in r for r in group):
            # One histogram of all seeds' outputs: the JS with the sampling noise of one seed's
            # outputs divided by the number of seeds, which separates bias from noise.
            pooled = np.sum([r["counts"] for r in group], axis=0)
            entry["js_pooled"] = metrics.js_divergence(pooled, np.append(np.ones(pooled.size - 1), 0.0))
        for name in sorted({k for r in group for k in r} - {"problem", "seed", "mode", "param", "outputs", "counts"}):
            values = [r[name] for r in group if r.get(name) is not None and not (isinstance(r[name], float) and math.isnan(r[name]))]
            if values:
                entry[name] = _mean_se(values)
        paired = [r[metric] - reference[r["seed"]][metric] for r in group
                  if r["seed"] in reference and mode != "data"]
        if paired:
            entry["diff_to_largest_k"] = _mean_se(paired)
        out.append(entry)
    return out


def matching_cost(summary: list[dict[str, Any]], problem: str) -> dict[str, Any] | None:
    """The smallest T from which on every thinned row's headline metric is within 2 paired SE of the largest K's."""
    rows = sorted((e for e in summary if e["problem"] == problem and e["mode"] == "thinned"), key=lambda e: e["param"])
    indep = [e for e in summary if e["problem"] == problem and e["mode"] == "independent"]
    if not rows or not indep:
        return None
    largest = max(indep, key=lambda e: e["param"])

    def matches(e: dict[str, Any]) -> bool:
        mean, se = e["diff_to_largest_k"]
        return mean <= 2.0 * (se if not math.isnan(se) else 0.0)

    first = None
    for i in range(len(rows)):
        if all(matches(e) for e in rows[i:]):
            first = rows[i]
            break
    if first is None:
        return None
    return {"thin": first["param"], "proposals_per_output": first["proposals_per_output"][0],
            "k": largest["param"], "saving": largest["param"] / first["proposals_per_output"][0]}


def _fmt(pair: tuple[float, float] | float | None, digits: int = 4) -> str:
    if pair is None:
        return ""
    if isinstance(pair, float):
        return f"{pair:.{digits}f}"
    mean, se = pair
    return f"{mean:.{digits}f}" if math.isnan(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


def markdown_table(summary: list[dict[str, Any]], problem: str) -> str:
    metric, _, label = quality_of(problem)
    extra = {"grid2d": [("js_pooled", "JS of all seeds' outputs pooled", 4), ("hq_share", "HQ share", 3),
                        ("modes", "modes", 1)],
             "digits": [("classifier_score", "classifier score", 3)],
             "fashion": [("precision", "precision", 3), ("recall", "recall", 3),
                         ("inception_score", "IS analogue", 3), ("class_js_nats", "class-mix JS (nats)", 4)],
             }.get(problem.split(",")[0], [])
    head = ["mode", "K or T", "proposals / output", label, "Δ to largest K", *(e[1] for e in extra),
            "repeat share (observed)", "expected: at target (pilot draws)", "expected: at data (real samples)",
            "restarted chains"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in (x for x in summary if x["problem"] == problem):
        param = e["param"] if e["param"] is not None else "auto: " + ",".join(str(t) for t in e.get("thin_per_seed", []))
        if e["mode"] == "data":
            param = "(independent draws of the data: the metric's floor)"
        per_output = e.get("proposals_per_output")
        cells = [e["mode"], str(param), "" if per_output is None else f"{per_output[0]:.1f}", _fmt(e.get(metric)),
                 _fmt(e.get("diff_to_largest_k")), *(_fmt(e.get(k), d) for k, _, d in extra),
                 _fmt(e.get("repeat_share")), _fmt(e.get("expected_at_target")), _fmt(e.get("expected_at_data")),
                 _fmt(e.get("restart_share"), 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(e["problem"] for e in summary))
    fig, axes = plt.subplots(2, len(problems), figsize=(5.2 * len(problems), 7.5), squeeze=False)
    for col, problem in enumerate(problems):
        metric, _, label = quality_of(problem)
        top, bottom = axes[0, col], axes[1, col]
        for mode, style in (("independent", "o-"), ("thinned", "s-")):
            rows = sorted((e for e in summary if e["problem"] == problem and e["mode"] == mode), key=lambda e: e["param"])
            if not rows:
                continue
            x = [e["proposals_per_output"][0] for e in rows]
            y = [e[metric][0] for e in rows]
            err = [0 if math.isnan(e[metric][1]) else e[metric][1] for e in rows]
            name = "independent chains (x = K)" if mode == "independent" else "thinned chains (x = T)"
            top.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=name)
            if mode == "thinned":
                bottom.errorbar(x, [e["repeat_share"][0] for e in rows],
                                yerr=[0 if math.isnan(e["repeat_share"][1]) else e["repeat_share"][1] for e in rows],
                                fmt="s-", capsize=3, label="observed repeat share")
                bottom.plot(x, [e["expected_at_target"][0] for e in rows], "k--",
                            label="expected at the target (generated pilot draws)")
                bottom.plot(x, [e["expected_at_data"][0] for e in rows], "k:",
                            label="expected at the data (real samples)")
        for e in summary:
            if e["problem"] == problem and e["mode"] == "base":
                top.axhline(e[metric][0], color="grey", lw=0.8, ls=":", label="plain generator")
            if e["problem"] == problem and e["mode"] == "thinned-auto":
                top.plot([e["proposals_per_output"][0]], [e[metric][0]], "r*", ms=14, label="thinned, auto T (1% budget)")
                bottom.axvline(e["proposals_per_output"][0], color="r", lw=0.8, ls=":", label="auto T")
        for e in summary:
            if e["problem"] == problem and e["mode"] == "data":
                top.axhline(e[metric][0], color="green", lw=0.8, ls="--", label="independent data draws (floor)")
        top.set_xscale("log", base=2)
        top.set_yscale("log")
        top.set_title(problem)
        top.set_ylabel(label)
        top.legend(fontsize=8)
        bottom.set_xscale("log", base=2)
        bottom.set_yscale("log")
        low, high = bottom.get_ylim()
        bottom.set_ylim(max(low, 1e-4), high)  # shares of 0 (nothing repeats) are off the log scale
        bottom.set_xlabel("proposals (G and D passes) per output sample")
        bottom.set_ylabel("share of outputs repeating their predecessor")
        bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- the measurement


def run_tradeoff(settings: Settings, output: Path, *, plot_path: Path | None = None,
                 from_json: Sequence[str] = (), log: Callable[[str], None] = lambda message: None) -> None:
    """Measures every problem and seed (or merges the rows of earlier tradeoff.json files), and writes
    OUTPUT/tradeoff.json, OUTPUT/tradeoff.md and the plot (default OUTPUT/tradeoff.png)."""
    if settings.outputs < 1 or settings.outputs_per_chain < 1:
        raise ConfigError("--outputs and --outputs-per-chain must be at least 1.")
    output.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    if from_json:
        for path in from_json:
            rows.extend(json.loads(Path(path).read_text())["rows"])
        settings = Settings(tuple(dict.fromkeys(r["problem"] for r in rows)),
                            tuple(sorted({r["seed"] for r in rows})), 0, 0, (), (), settings.budget, 0, 0)
    else:
        for problem in settings.problems:
            for seed in settings.seeds:
                rows.extend(measure_seed(problem, seed, settings, log))
    summary = summarise(rows)
    labels = list(dict.fromkeys(e["problem"] for e in summary))
    headline = {p: matching_cost(summary, p) for p in labels}
    (output / "tradeoff.json").write_text(json.dumps(
        {"settings": settings.__dict__, "rows": rows, "summary": summary, "matching_cost": headline}, indent=1))
    tables = [f"### {p}\n\n{markdown_table(summary, p)}\n" for p in labels]
    (output / "tradeoff.md").write_text("\n".join(tables))
    plot(summary, plot_path or output / "tradeoff.png")
    for p, h in headline.items():
        if h:
            log(f"{p}: thinned chains match K = {h['k']} from T = {h['thin']} "
                f"({h['proposals_per_output']:.1f} proposals per output, {h['saving']:.0f}x fewer)")
        else:
            log(f"{p}: no thinned configuration matches the largest K within 2 paired standard errors")
    log(f"wrote {output / 'tradeoff.json'} and {output / 'tradeoff.md'}")
