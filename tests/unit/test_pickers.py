"""The pickers against a slow, obviously correct loop, and against known distributions."""


import numpy as np
import pytest
from scipy import stats

from mhgan_dist.core import pickers
from mhgan_dist.core import streams
from mhgan_dist.core.streams import Stream


def reference_mh_chain(initial_logit, logits, exponentials, restart_exponentials):
    """One chain, one step at a time, in probabilities: accept iff u <= min(1, odds'/odds)."""

    def odds(logit):
        d = 1.0 / (1.0 + np.exp(-logit))
        return d / (1.0 - d)

    def run(start_logit, proposals, uniforms):
        state, current, accepts, prob = None, start_logit, 0, 1.0
        for k, (proposal, u) in enumerate(zip(proposals, uniforms)):
            prob = min(1.0, odds(proposal) / odds(current))
            if u <= prob:
                state, current, accepts = k, proposal, accepts + 1
        return state, accepts, prob

    state, accepts, prob = run(initial_logit, logits, np.exp(-exponentials))
    if state is not None:
        return state, accepts, False, prob
    state, accepts, prob = run(logits[0], logits[1:], np.exp(-restart_exponentials))
    return (0 if state is None else state + 1), accepts, True, prob


def reference_drs_chain(logits, pilot_max, uniforms, percentile=95.0, eps=1e-6):
    logits = logits.astype(np.float64)
    f, running = [], pilot_max
    for l in logits:
        running = max(running, l)
        f.append(l - running - np.log(1.0 - np.exp(l - running - eps)))
    f = np.array(f) - np.percentile(f, percentile)
    for k, (fk, u) in enumerate(zip(f, uniforms)):
        if u < 1.0 / (1.0 + np.exp(-fk)):
            return k
    return int(np.argmax(logits))


def draws(seed, chains, k):
    return (
        streams.chain_exponentials(seed, Stream.MH_STEPS, 0, chains, k),
        streams.chain_exponentials(seed, Stream.MH_RESTART, 0, chains, k - 1),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # float32: the scores the job passes
@pytest.mark.parametrize("k", [1, 2, 7, 64])
def test_vectorised_mh_equals_the_plain_loop(k, dtype):
    rng = np.random.default_rng(k)
    chains = 400
    logits = rng.normal(0.0, 2.0, size=(chains, k)).astype(dtype)
    # A spread of starts, some far above every proposal so that restarts happen.
    initial = np.where(rng.random(chains) < 0.3, 30.0, rng.normal(0.0, 2.0, chains)).astype(dtype)
    exps, restart_exps = draws(k, chains, k)
    result = pickers.mh(logits, initial, exps, restart_exps)
    for c in range(chains):
        # The loop works in float64 on the same (float32-exact) inputs.
        picked, accepts, restarted, prob = reference_mh_chain(
            initial[c].astype(np.float64), logits[c].astype(np.float64),
            exps[c].astype(np.float64), restart_exps[c].astype(np.float64),
        )
        assert result.picked[c] == picked, c
        assert result.accepts[c] == accepts, c
        assert result.restarted[c] == restarted, c
        assert result.accept_prob[c] == pytest.approx(prob, rel=1e-9 if dtype == np.float64 else 1e-5), c
    assert result.restarted.any() and not result.restarted.all()


def test_mh_never_emits_the_real_start_and_reports_restarts():
    chains, k = 1000, 10
    logits = np.random.default_rng(0).normal(size=(chains, k)).astype(np.float32)
    initial = np.full(chains, 40.0, dtype=np.float32)  # a real sample D is sure of: nothing beats it
    result = pickers.mh(logits, initial, *draws(0, chains, k))
    assert result.restarted.all()
    assert ((result.picked >= 0) & (result.picked < k)).all()
    # After the restart the chain runs from s_1, so it can emit s_1 or move on.
    assert (result.picked == 0).any() and (result.picked > 0).any()


def test_mh_saturated_scores_neither_overflow_nor_nan():
    logits = np.array([[1e30, -1e30, 5e29, 3.4e38]], dtype=np.float32)
    with np.errstate(all="raise"):
        result = pickers.mh(logits, np.array([-3.4e38], np.float32), *draws(1, 1, 4))
    assert np.isfinite(result.accept_prob).all()
    assert 0 <= result.picked[0] < 4


def test_mh_outputs_follow_the_target_with_the_exact_discriminator():
    # Discrete target p and proposal q on 6 states; the optimal D has log-odds log p - log q.
    p = np.array([0.30, 0.05, 0.20, 0.15, 0.25, 0.05])
    q = np.array([0.10, 0.20, 0.10, 0.30, 0.10, 0.20])
    chains, k, seed = 20_000, 40, 11
    rng = np.random.default_rng(seed)
    states = rng.choice(6, size=(chains, k), p=q)
    real_start = rng.choice(6, size=chains, p=p)
    log_odds = np.log(p) - np.log(q)
    result = pickers.mh(log_odds[states], log_odds[real_start], *draws(seed, chains, k))
    emitted = states[np.arange(chains), result.picked]
    counts = np.bincount(emitted, minlength=6)
    # Significance 1e-3 for the correct target; the proposal must be rejected far beyond it.
    assert stats.chisquare(counts, chains * p).pvalue > 1e-3
    assert stats.chisquare(counts, chains * q).pvalue < 1e-12
    base_counts = np.bincount(states[np.arange(chains), pickers.base(log_odds[states]).picked], minlength=6)
    assert stats.chisquare(base_counts, chains * q).pvalue > 1e-3
    assert stats.chisquare(base_counts, chains * p).pvalue < 1e-12


@pytest.mark.parametrize("k", [1, 5, 50])
def test_drs_equals_the_plain_loop(k):
    rng = np.random.default_rng(100 + k)
    chains = 300
    logits = rng.normal(0.0, 3.0, size=(chains, k))
    uniforms = streams.chain_uniforms(k, Stream.DRS_STEPS, 0, chains, k)
    pilot_max = 4.0
    result = pickers.drs(logits, pilot_max, uniforms)
    expected = [reference_drs_chain(logits[c], pilot_max, uniforms[c]) for c in range(chains)]
    assert np.array_equal(result.picked, expected)
    assert not result.restarted.any()
    assert ((result.accept_prob >= 0) & (result.accept_prob <= 1)).all()


def test_drs_falls_back_to_the_highest_score_and_honours_gamma():
    logits = np.array([[-5.0, 3.0, 1.0]])
    never = np.full((1, 3), 1.0 - 1e-16)
    assert pickers.drs(logits, 3.0, never, gamma=50.0).picked[0] == 1
    always = np.zeros((1, 3))
    assert pickers.drs(logits, 3.0, always, gamma=-50.0).picked[0] == 0


def test_base_picks_the_first_proposal():
    result = pickers.base(np.zeros((5, 3), np.float32))
    assert (result.picked == 0).all() and not result.restarted.any() and (result.accepts == 0).all()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: pickers.mh(np.array([[np.nan, 1.0]]), np.zeros(1), np.ones((1, 2)), np.ones((1, 1))), "proposal_logits"),
        (lambda: pickers.mh(np.zeros((2, 2)), np.array([0.0, np.inf]), np.ones((2, 2)), np.ones((2, 1))), "initial_logits"),
        (lambda: pickers.mh(np.zeros((2, 0)), np.zeros(2), np.ones((2, 0)), np.ones((2, 0))), "K >= 1"),
        (lambda: pickers.mh(np.zeros((0, 3)), np.zeros(0), np.ones((0, 3)), np.ones((0, 2))), "empty"),
        (lambda: pickers.mh(np.zeros((2, 3)), np.zeros(3), np.ones((2, 3)), np.ones((2, 2))), "initial_logits has 3"),
        (lambda: pickers.mh(np.zeros((2, 3)), np.zeros(2), np.ones((2, 4)), np.ones((2, 2))), "exponentials"),
        (lambda: pickers.mh(np.zeros((2, 3)), np.zeros(2), -np.ones((2, 3)), np.ones((2, 2))), "exponentials"),
        (lambda: pickers.mh(np.zeros((2, 3), np.int64), np.zeros(2), np.ones((2, 3)), np.ones((2, 2))), "float32 or float64"),
        (lambda: pickers.drs(np.zeros((2, 3)), np.nan, np.zeros((2, 3))), "pilot_max_logit"),
        (lambda: pickers.drs(np.zeros((2, 3)), 0.0, np.full((2, 3), 1.5)), "uniforms"),
        (lambda: pickers.drs(np.zeros((2, 3)), 0.0, np.zeros((2, 3)), gamma_percentile=101), "gamma_percentile"),
        (lambda: pickers.base(np.zeros((3,))), "proposal_logits"),
    ],
)
def test_invalid_input_raises_a_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_restart_draws_can_be_supplied_lazily_for_the_restarted_rows_only():
    chains, k = 600, 12
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(chains, k))
    initial = np.where(rng.random(chains) < 0.5, 25.0, 0.0)
    exps, restart = draws(4, chains, k)
    asked = []

    def lazily(rows):
        asked.append(rows)
        return streams.chain_exponentials_at(4, Stream.MH_RESTART, rows, k - 1)

    eager, lazy = pickers.mh(logits, initial, exps, restart), pickers.mh(logits, initial, exps, lazily)
    assert np.array_equal(eager.picked, lazy.picked) and np.array_equal(eager.accepts, lazy.accepts)
    assert len(asked) == 1 and np.array_equal(asked[0], np.flatnonzero(eager.restarted))


# ------------------------------------------------------------ tempering and clipping


def reference_tempered_chain(initial_logit, logits, exponentials, restart_exponentials, power, cap):
    """The plain loop in probabilities on the odds min(odds, exp(cap))^power."""
    def tempered(logit):
        d = 1.0 / (1.0 + np.exp(-logit))
        odds = d / (1.0 - d)
        if cap is not None:
            odds = min(odds, np.exp(cap))
        return np.log(odds**power)  # a log-odds the plain loop turns back into odds

    return reference_mh_chain(tempered(initial_logit), np.array([tempered(v) for v in logits]), exponentials,
                              restart_exponentials)


def test_the_default_odds_options_reproduce_todays_picks_bit_for_bit():
    rng = np.random.default_rng(21)
    chains, k = 2000, 33
    for dtype in (np.float32, np.float64):
        logits = rng.normal(0.0, 2.5, size=(chains, k)).astype(dtype)
        initial = np.where(rng.random(chains) < 0.3, 30.0, rng.normal(0.0, 2.0, chains)).astype(dtype)
        exps, restart_exps = draws(5, chains, k)
        today = pickers.mh(logits, initial, exps, restart_exps)
        explicit = pickers.mh(logits, initial, exps, restart_exps, odds_power=1.0, odds_cap_logit=None)
        for field in ("picked", "accepts", "restarted", "accept_prob"):
            assert np.array_equal(getattr(today, field), getattr(explicit, field)), field
        # b = 1 hands the very same array on: nothing is multiplied or copied.
        assert pickers.target_logits(logits, 1.0, None) is logits
        uniforms = streams.chain_uniforms(5, Stream.DRS_STEPS, 0, chains, k)
        drs_today = pickers.drs(logits, 4.0, uniforms)
        drs_explicit = pickers.drs(logits, 4.0, uniforms, odds_power=1.0, odds_cap_logit=None)
        for field in ("picked", "accepts", "accept_prob"):
            assert np.array_equal(getattr(drs_today, field), getattr(drs_explicit, field)), field


@pytest.mark.parametrize("power, cap", [(0.5, None), (0.25, 1.5), (1.0, 0.0), (0.7, -0.5)])
def test_tempered_and_clipped_mh_equals_the_plain_loop(power, cap):
    rng = np.random.default_rng(int(power * 100) + 7)
    chains, k = 300, 20
    logits = rng.normal(0.0, 2.0, size=(chains, k))
    initial = np.where(rng.random(chains) < 0.3, 12.0, rng.normal(0.0, 2.0, chains))
    exps, restart_exps = draws(9, chains, k)
    result = pickers.mh(logits, initial, exps, restart_exps, odds_power=power,
                        odds_cap_logit=None if cap is None else cap)
    for c in range(chains):
        picked, accepts, restarted, prob = reference_tempered_chain(
            initial[c], logits[c], exps[c], restart_exps[c], power, cap)
        assert (result.picked[c], result.accepts[c], result.restarted[c]) == (picked, accepts, restarted), c
        assert result.accept_prob[c] == pytest.approx(prob, rel=1e-9), c


# The paper's 1-D problem: data = four equal Gaussians at 0, 1, 2, 3 (std 0.25); G under-covers the mode at 3.
MODES = np.array([0.0, 1.0, 2.0, 3.0])
STD = 0.25
DATA_WEIGHTS = np.full(4, 0.25)
G_WEIGHTS = np.array([0.32, 0.32, 0.32, 0.04])
EDGES = np.concatenate([[-np.inf], np.linspace(-0.75, 3.75, 19), [np.inf]])  # 20 bins, 0.25 wide inside


def log_mixture(x, weights):
    return np.logaddexp.reduce(np.log(weights) + stats.norm.logpdf(x[..., None], MODES, STD), axis=-1)


def exact_log_odds(x):
    """The optimal D: log p_data(x) - log p_G(x); bounded here (G's weights are all > 0)."""
    return log_mixture(x, DATA_WEIGHTS) - log_mixture(x, G_WEIGHTS)


def target_bin_masses(power):
    """Bin masses of p_G^(1-b) p_data^b, normalised, by the trapezoid rule on a step of 1e-4."""
    grid = np.linspace(-3.0, 6.0, 90_001)
    log_density = (1.0 - power) * log_mixture(grid, G_WEIGHTS) + power * log_mixture(grid, DATA_WEIGHTS)
    density = np.exp(log_density)
    cumulative = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    cumulative /= cumulative[-1]
    at_edges = np.interp(np.clip(EDGES, grid[0], grid[-1]), grid, cumulative)
    return np.diff(at_edges)


def generator_draws(rng, shape):
    component = rng.choice(4, size=shape, p=G_WEIGHTS)
    return MODES[component] + STD * rng.standard_normal(shape)


def data_draws(rng, n):
    return MODES[rng.integers(0, 4, n)] + STD * rng.standard_normal(n)


def chi_square_pvalue(samples, masses):
    counts = np.histogram(samples, EDGES)[0]
    return stats.chisquare(counts, samples.size * masses).pvalue


@pytest.mark.parametrize("power", [1.0, 0.5, 0.25])
def test_tempered_mh_samples_p_g_to_the_1_minus_b_times_p_data_to_the_b(power):
    # Exact D; chains start at real samples (p_data), as in the pipeline. Odds ratios lie within
    # [0.78, 6.25], so the independence sampler forgets its start geometrically: after K = 60 steps
    # the distance to the target is below (1 - 1/6.25)^60 < 3e-5, far below what 20,000 chains resolve.
    chains, k, seed = 20_000, 60, 40 + int(power * 4)
    rng = np.random.default_rng(seed)
    x = generator_draws(rng, (chains, k))
    start = data_draws(rng, chains)
    result = pickers.mh(exact_log_odds(x), exact_log_odds(start), *draws(seed, chains, k), odds_power=power)
    emitted = x[np.arange(chains), result.picked]
    # Chi-square on 20 bins against the exact tempered target, at significance 1e-3 per check.
    assert chi_square_pvalue(emitted, target_bin_masses(power)) > 1e-3
    # The test has power: b < 1 is neither the data nor the generator, and sits where theory puts it.
    for other in (1.0, 0.5, 0.25, 0.0):
        if other != power:
            assert chi_square_pvalue(emitted, target_bin_masses(other)) < 1e-6, other
    # The under-covered mode at 3 gets the target's share, between G's 4% and the data's 25%:
    # within 4 binomial standard errors of the target's mass.
    at_3 = np.mean(emitted > 2.5)
    mass = target_bin_masses(power)[EDGES[1:] > 2.5].sum()
    assert abs(at_3 - mass) < 4 * np.sqrt(mass * (1 - mass) / chains)
    assert G_WEIGHTS[3] < at_3 <= DATA_WEIGHTS[3] + 4 * np.sqrt(0.25 * 0.75 / chains)


def test_tempered_drs_with_gamma_zero_samples_the_same_target():
    # With gamma = 0 and the pilot maximum at the supremum of the (transformed) log-odds, DRS accepts
    # proposal x with probability about exp(b (l(x) - max l)): rejection sampling of p_G x odds^b.
    # Acceptance is at least E_G[r^b] / max r^b > 0.35 per proposal, so with K = 60 a chain falls back
    # to its highest score with probability below 0.65^60 < 1e-11.
    chains, k, seed, power = 20_000, 60, 50, 0.5
    rng = np.random.default_rng(seed)
    x = generator_draws(rng, (chains, k))
    sup = float(exact_log_odds(np.linspace(-3.0, 8.0, 110_001)).max())
    uniforms = streams.chain_uniforms(seed, Stream.DRS_STEPS, 0, chains, k)
    result = pickers.drs(exact_log_odds(x), sup, uniforms, gamma=0.0, odds_power=power)
    emitted = x[np.arange(chains), result.picked]
    assert chi_square_pvalue(emitted, target_bin_masses(power)) > 1e-3
    assert chi_square_pvalue(emitted, target_bin_masses(1.0)) < 1e-6


def test_clipping_caps_the_odds_at_a_quantile_of_the_generated_draws():
    generated = np.random.default_rng(3).normal(0.0, 2.0, 10_001)
    cap = pickers.odds_cap_logit(generated, 0.9)
    assert cap == pytest.approx(np.sort(generated)[9000])  # 10,001 draws: the 0.9-quantile is a draw
    assert pickers.odds_cap_logit(generated, 1.0) == generated.max()
    logits = np.array([[-3.0, cap - 1.0, cap, cap + 5.0, 1e30]], np.float32)
    out = pickers.target_logits(logits, 0.5, cap)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, 0.5 * np.minimum(logits, np.float32(cap)))
    # Every state above the cap has the cap's odds: from one of them a chain accepts any other at or above it.
    result = pickers.mh(np.array([[cap + 1.0, cap + 9.0]]), np.array([cap + 50.0]), np.zeros((1, 2)),
                        np.zeros((1, 1)), odds_cap_logit=cap)
    assert result.picked[0] == 1 and result.accepts[0] == 2 and not result.restarted[0]


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: pickers.target_logits(np.zeros(3), 0.0), "odds_power"),
        (lambda: pickers.target_logits(np.zeros(3), 1.5), "odds_power"),
        (lambda: pickers.target_logits(np.zeros(3), float("nan")), "odds_power"),
        (lambda: pickers.target_logits(np.zeros(3), 0.5, float("inf")), "odds_cap_logit"),
        (lambda: pickers.mh(np.zeros((2, 3)), np.zeros(2), np.ones((2, 3)), np.ones((2, 2)), odds_power=-1.0),
         "odds_power"),
        (lambda: pickers.drs(np.zeros((2, 3)), 0.0, np.zeros((2, 3)), odds_cap_logit=float("nan")), "odds_cap_logit"),
        (lambda: pickers.odds_cap_logit(np.zeros(3), 0.0), "quantile"),
        (lambda: pickers.odds_cap_logit(np.array([]), 0.5), "non-empty"),
    ],
)
def test_invalid_odds_options_raise_a_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ------------------------------------------------------------ the options in the run's identity


def _identity(**sampling):
    from mhgan_dist.run.config import build_job_config

    config = build_job_config({"output": "/tmp/unused", **sampling})
    return config.run_identity(batch_size=64, precision="fp32", model_fingerprint="f")


def test_default_odds_options_leave_the_run_identity_as_it_was_before_they_existed():
    from mhgan_dist.run.config import config_differences

    today = _identity()
    assert not any("odds" in key for key in today)  # a run recorded before the options resumes
    assert _identity(odds_power=1.0) == today and _identity(odds_power=1) == today
    tempered = _identity(odds_power=0.5)
    assert tempered["sampling.odds_power"] == 0.5
    assert config_differences(today, tempered) == ["sampling.odds_power"]
    assert config_differences(tempered, today) == ["sampling.odds_power"]
    clipped = _identity(odds_cap_quantile=0.99)
    assert config_differences(today, clipped) == ["sampling.odds_cap_quantile"]
    assert config_differences(_identity(odds_cap_quantile=0.9), clipped) == ["sampling.odds_cap_quantile"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"odds_power": 0.0}, "--odds-power must be in"),
        ({"odds_power": 1.5}, "--odds-power must be in"),
        ({"odds_power": float("nan")}, "--odds-power must be in"),
        ({"odds_cap_quantile": 0.0}, "--odds-cap-quantile must be in"),
        ({"odds_cap_quantile": 1.01}, "--odds-cap-quantile must be in"),
        ({"odds_power": 0.5, "picker": "base"}, "base picker"),
        ({"odds_power": "half"}, "odds_power has the wrong type"),
    ],
)
def test_bad_odds_options_are_refused_with_one_sentence(options, message):
    from mhgan_dist.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as info:
        _identity(**options)
    assert "\n" not in str(info.value)


def test_a_base_re_pick_does_not_inherit_the_sources_odds_options():
    from jobs.repick import merge_options

    recorded = {"picker": "mh", "odds_power": 0.5, "odds_cap_quantile": 0.9, "seed": 3}
    assert merge_options(recorded, {"picker": "base"}) == {"picker": "base", "seed": 3}
    assert merge_options(recorded, {"picker": "drs"}) == {**recorded, "picker": "drs"}
    assert merge_options(recorded, {"picker": "base", "odds_power": 0.5})["odds_power"] == 0.5  # refused later
    assert merge_options(recorded, {}) == recorded


def test_a_cap_at_the_top_generated_odds_on_isotonic_equals_the_capped_isotonic_calibration():
    from mhgan_dist.core import calibrators

    rng = np.random.default_rng(31)
    real, fake = rng.normal(1.0, 1.0, 3000) * 2 + 3, rng.normal(-1.0, 1.0, 3000) * 2 + 3
    plain = calibrators.make_calibrator("isotonic").fit(real, fake)
    capped = calibrators.make_calibrator("isotonic-capped").fit(real, fake)
    cap = pickers.odds_cap_logit(plain.predict_logit(fake), 1.0)
    chains, k = 3000, 16
    raw = rng.normal(3.0, 3.0, size=(chains, k))
    start = real[rng.integers(0, real.size, chains)]
    exps, restart = draws(31, chains, k)
    a = pickers.mh(plain.predict_logit(raw.reshape(-1)).reshape(raw.shape), plain.predict_logit(start), exps,
                   restart, odds_cap_logit=cap)
    b = pickers.mh(capped.predict_logit(raw.reshape(-1)).reshape(raw.shape), capped.predict_logit(start), exps,
                   restart)
    np.testing.assert_array_equal(a.picked, b.picked)
    np.testing.assert_array_equal(a.restarted, b.restarted)
    assert a.restarted.any() and (raw > real.max()).any()  # the cap binds on these draws
