"""Long thinned chains against a slow one-chain loop, the exact-discriminator 1-D problem, and the T rule.

The 1-D problem: G = N(0, 1), data N(1, 1); the optimal discriminator's
log-odds are exactly log N(x; 1, 1) - log N(x; 0, 1) = x - 0.5 (an unbounded
density ratio, the harder case for an independence sampler). Its acceptance
probability has a closed form, a(x) = P(X' >= x) + exp(0.5 - x) Phi(x - 1)
for X' ~ N(0, 1), so the expected repeat share E_p[(1 - a(X))^T] is known by
quadrature and every statistical check below compares with an exact value.
Significance: 1e-3 per family of checks, Bonferroni within a family.
"""


import numpy as np
import pytest
from scipy import integrate, stats

from mhgan_dist.core import streams
from mhgan_dist.core import thinning
from mhgan_dist.errors import ConfigError
from mhgan_dist.core.streams import Stream

ALPHA = 1e-3


# ------------------------------------------------------------ the reference


def reference_thinned_chain(initial_logit, logits, exponentials, thin, restart_exponentials):
    """One chain, one step at a time, in probabilities; returns (outputs, restarted).

    outputs: one (picked, accepts in the slot, repeat, last step's acceptance probability) per slot.
    """

    def odds(logit):
        d = 1.0 / (1.0 + np.exp(-logit))
        return d / (1.0 - d)

    state, current, restarted, outputs = None, initial_logit, False, []
    for slot in range(len(logits) // thin):
        accepts, prob = 0, 1.0
        for k in range(slot * thin, (slot + 1) * thin):
            prob = min(1.0, odds(logits[k]) / odds(current))
            if np.exp(-exponentials[k]) <= prob:
                state, current, accepts = k, logits[k], accepts + 1
        if state is None:  # still at the real sample after slot 0: restart from s_0
            restarted, state, current, accepts, prob = True, 0, logits[0], 0, 1.0
            for k in range(1, thin):
                prob = min(1.0, odds(logits[k]) / odds(current))
                if np.exp(-restart_exponentials[k - 1]) <= prob:
                    state, current, accepts = k, logits[k], accepts + 1
        outputs.append((state, accepts, slot > 0 and accepts == 0, prob))
    return outputs, restarted


def thin_draws(seed, c0, c1, length, thin):
    return (
        streams.chain_exponentials(seed, Stream.THIN_STEPS, c0, c1, length),
        streams.chain_exponentials(seed, Stream.THIN_RESTART, c0, c1, thin - 1),
    )


@pytest.mark.parametrize("thin, length", [(1, 9), (2, 7), (5, 40), (16, 64), (7, 7)])
def test_vectorised_thinned_chains_equal_the_plain_loop(thin, length):
    rng = np.random.default_rng(1000 + thin)
    chains = 300
    logits = rng.normal(0.0, 2.0, size=(chains, length))
    # A spread of starts, a share far above every proposal so that chains restart.
    initial = np.where(rng.random(chains) < 0.3, 12.0, rng.normal(0.0, 2.0, chains))
    exps, restart_exps = thin_draws(thin, 0, chains, length, thin)
    result = thinning.thinned_chains(logits, initial, exps, thin, restart_exps)
    slots = length // thin
    assert result.picked.shape == (chains, slots) and result.outputs_per_chain == slots
    for c in range(chains):
        outputs, restarted = reference_thinned_chain(
            initial[c], logits[c], exps[c].astype(np.float64), thin, restart_exps[c].astype(np.float64)
        )
        assert result.restarted[c] == restarted, c
        for j, (picked, accepts, repeat, prob) in enumerate(outputs):
            assert result.picked[c, j] == picked, (c, j)
            assert result.accepts[c, j] == accepts, (c, j)
            assert result.repeat[c, j] == repeat, (c, j)
            assert result.accept_prob[c, j] == pytest.approx(prob, rel=1e-9), (c, j)
    assert result.restarted.any() and not result.restarted.all()
    np.testing.assert_array_equal(result.emit_steps, np.arange(1, slots + 1) * thin - 1)


def test_lazy_restart_draws_and_float32_scores_give_the_same_outputs():
    chains, length, thin = 500, 60, 6
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(chains, length)).astype(np.float32)
    initial = np.where(rng.random(chains) < 0.5, 20.0, 0.0).astype(np.float32)
    exps, restart = thin_draws(6, 0, chains, length, thin)
    asked = []

    def lazily(rows):
        asked.append(rows)
        return streams.chain_exponentials_at(6, Stream.THIN_RESTART, rows, thin - 1)

    eager = thinning.thinned_chains(logits, initial, exps, thin, restart)
    lazy = thinning.thinned_chains(logits, initial, exps, thin, lazily)
    wide = thinning.thinned_chains(logits.astype(np.float64), initial.astype(np.float64), exps, thin, restart)
    for name in ("picked", "accepts", "repeat", "restarted"):
        np.testing.assert_array_equal(getattr(eager, name), getattr(lazy, name), err_msg=name)
    assert len(asked) == 1 and np.array_equal(asked[0], np.flatnonzero(eager.restarted))
    # float32 thresholds may round differently from float64 at a tie; none occurs on these draws.
    np.testing.assert_array_equal(eager.picked, wide.picked)


def test_outputs_do_not_depend_on_how_chains_are_batched():
    seed, chains, thin, length = 21, 700, 4, 48
    logits = streams.latents(seed, Stream.PROPOSALS, 0, chains * length, 1).reshape(chains, length) - 0.5
    initial = np.zeros(chains, dtype=np.float32) + 1.5

    def part(c0, c1):
        exps = streams.chain_exponentials(seed, Stream.THIN_STEPS, c0, c1, length)
        return thinning.thinned_chains(
            logits[c0:c1], initial[c0:c1], exps, thin,
            lambda rows: streams.chain_exponentials_at(seed, Stream.THIN_RESTART, c0 + rows, thin - 1),
        )

    whole = part(0, chains)
    pieces = [part(a, b) for a, b in [(0, 100), (100, 333), (333, chains)]]
    for name in ("picked", "accepts", "repeat", "accept_prob", "restarted"):
        np.testing.assert_array_equal(getattr(whole, name), np.concatenate([getattr(p, name) for p in pieces]))
    total = pieces[0].tally() + pieces[1].tally() + pieces[2].tally()
    assert total == whole.tally()


# ----------------------------------------------------- never a real sample


@pytest.mark.parametrize("thin", [1, 3, 10])
def test_no_real_start_is_ever_emitted(thin):
    chains, slots = 400, 6
    length = thin * slots
    rng = np.random.default_rng(thin)
    logits = rng.normal(size=(chains, length))
    # Real samples D is sure of: no proposal can beat them, so every chain must restart,
    # and a sentinel score that no proposal has would show up if one were emitted.
    initial = np.full(chains, 40.0)
    exps, restart = thin_draws(thin, 0, chains, length, thin)
    result = thinning.thinned_chains(logits, initial, exps, thin, restart)
    assert result.restarted.all()
    assert ((result.picked >= 0) & (result.picked < length)).all()
    emitted = np.take_along_axis(logits, result.picked, axis=1)
    assert (emitted != 40.0).all()
    assert (result.picked[:, 0] < thin).all()  # slot 0 of a restarted chain comes from its restart pass
    if thin == 1:
        assert (result.picked[:, 0] == 0).all()  # T = 1: the restart emits s_0, as the paper's K = 1
    assert (np.diff(result.picked, axis=1) >= 0).all()  # a chain's outputs never go back in time


def test_chains_that_move_emit_only_generated_states_from_their_first_acceptance_on():
    chains, thin, slots = 2000, 4, 5
    length = thin * slots
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(chains, length))
    initial = rng.normal(1.0, 1.5, chains)
    exps, restart = thin_draws(8, 0, chains, length, thin)
    result = thinning.thinned_chains(logits, initial, exps, thin, restart)
    accepted = initial[:, None] <= logits + exps  # step-0-style test of every step against the start
    first = np.where(accepted.any(axis=1), accepted.argmax(axis=1), length)
    moved = ~result.restarted
    # From the real start, the first acceptance is the first step whose threshold beats the start.
    assert (first[moved] < thin).all() and (first[~moved] >= thin).all()
    assert (result.picked[moved, 0] >= first[moved]).all()


def test_restarted_chains_join_the_chain_that_never_restarts_at_its_first_move():
    # The bound on the restart's effect (module docstring) rests on this coupling: with the same
    # proposals and step variates, a restarted chain's state equals that of the chain left at its
    # real start from the latter's first accepted move on.
    chains, thin, slots = 400, 3, 8
    length = thin * slots
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(chains, length))
    initial = rng.normal(2.0, 1.0, chains)  # high starts: many restarts
    exps, restart = thin_draws(9, 0, chains, length, thin)
    result = thinning.thinned_chains(logits, initial, exps, thin, restart)
    assert result.restarted.mean() > 0.2
    for c in np.flatnonzero(result.restarted):
        state, current = None, initial[c]
        for j, end in enumerate(result.emit_steps):
            for k in range(end - thin + 1, end + 1):
                if current <= logits[c, k] + exps[c, k]:
                    state, current = k, logits[c, k]
            if state is not None:
                assert result.picked[c, j] == state, (c, j)


# ----------------------------------------- the exact-discriminator problem


def exact_acceptance(x):
    """a(x) for q = N(0, 1), p = N(1, 1), r(x) = exp(x - 0.5)."""
    x = np.asarray(x, dtype=np.float64)
    return stats.norm.sf(x) + np.exp(0.5 - x + stats.norm.logcdf(x - 1.0))


_GRID = np.linspace(-10.0, 16.0, 260_001)
with np.errstate(divide="ignore"):
    _GRID_TERMS = (stats.norm.pdf(_GRID, 1.0), np.log1p(-exact_acceptance(_GRID)))


def exact_repeat_share(thin):
    """E_p[(1 - a(X))^T] by Simpson's rule on a grid of step 1e-4 (error far below 1e-9)."""
    density, log_reject = _GRID_TERMS
    with np.errstate(divide="ignore"):
        return float(integrate.simpson(density * np.exp(thin * log_reject), x=_GRID))


def calibration_logits(seed, n):
    """Exact log-odds of n generated draws that no chain uses."""
    return streams.latents(seed, Stream.CALIBRATION, 0, n, 1)[:, 0].astype(np.float64) - 0.5


def run_exact_problem(seed, chains, thin, slots, num_real=20_000, odds_power=1.0):
    """Outputs (values [C, N]) and the result of thinned chains on the 1-D problem, seeded like the pipeline."""
    length = thin * slots
    x = streams.latents(seed, Stream.PROPOSALS, 0, chains * length, 1).reshape(chains, length).astype(np.float64)
    real = 1.0 + streams.latents(seed, Stream.DRS_PILOT, 0, num_real, 1)[:, 0].astype(np.float64)  # held-out data
    start = real[streams.chain_integers(seed, Stream.REAL_INIT, 0, chains, num_real)]
    exps = streams.chain_exponentials(seed, Stream.THIN_STEPS, 0, chains, length)
    result = thinning.thinned_chains(
        x - 0.5, start - 0.5, exps, thin,
        lambda rows: streams.chain_exponentials_at(seed, Stream.THIN_RESTART, rows, thin - 1),
        odds_power=odds_power,
    )
    return np.take_along_axis(x, result.picked, axis=1), result


def ks_threshold_for_chains(values, cdf, alpha, centre=1.0):
    """KS critical value for C independent chains of N correlated outputs each.

    Effective sample size from batch means with the chains as batches: at each
    decile t of the target, the variance of a chain's sum of 1{X <= t} - F(t)
    against N F(t)(1 - F(t)) (its value for independent outputs) is the
    variance inflation; the largest over the deciles divides n.
    """
    chains, per_chain = values.shape
    inflation = 1.0
    for t in stats.norm.ppf(np.linspace(0.1, 0.9, 9), centre):
        f = cdf(t)
        sums = (values <= t).sum(axis=1) - per_chain * f
        inflation = max(inflation, sums.var(ddof=1) / (per_chain * f * (1.0 - f)))
    ess = values.size / inflation
    return stats.kstwobign.isf(alpha) / np.sqrt(ess), ess


def test_thinned_chains_follow_the_data_distribution_with_the_exact_discriminator():
    seed, chains, slots = 31, 2000, 50
    thin, _ = thinning.choose_thin(calibration_logits(seed, 20_000), 0.01)
    values, result = run_exact_problem(seed, chains, thin, slots)
    target = stats.norm(1.0, 1.0).cdf
    threshold, ess = ks_threshold_for_chains(values, target, ALPHA)
    assert ess > 0.2 * values.size  # thinned to 1% repeats, outputs are close to independent
    assert stats.kstest(values.reshape(-1), target).statistic < threshold
    # The test has power: the generator's own draws, and a target shifted by 0.1, fail it.
    proposals = streams.latents(seed, Stream.PROPOSALS, 0, values.size, 1)[:, 0]
    assert stats.kstest(proposals, target).statistic > 10 * threshold
    assert stats.kstest(values.reshape(-1), stats.norm(1.1, 1.0).cdf).statistic > threshold


def test_the_default_odds_options_reproduce_todays_thinned_chains_bit_for_bit():
    rng = np.random.default_rng(77)
    chains, length, thin = 400, 48, 4
    logits = rng.normal(0.0, 2.0, size=(chains, length)).astype(np.float32)
    initial = np.where(rng.random(chains) < 0.3, 12.0, rng.normal(0.0, 2.0, chains)).astype(np.float32)
    exps, restart_exps = thin_draws(8, 0, chains, length, thin)
    today = thinning.thinned_chains(logits, initial, exps, thin, restart_exps)
    explicit = thinning.thinned_chains(logits, initial, exps, thin, restart_exps, odds_power=1.0, odds_cap_logit=None)
    for name in ("picked", "accepts", "repeat", "accept_prob", "restarted"):
        np.testing.assert_array_equal(getattr(today, name), getattr(explicit, name), err_msg=name)
    # Tempering and clipping are the plain loop on the transformed log-odds b * min(l, cap).
    power, cap = 0.5, 1.0
    tempered = thinning.thinned_chains(logits, initial, exps, thin, restart_exps, odds_power=power,
                                       odds_cap_logit=cap)
    for c in range(chains):
        outputs, restarted = reference_thinned_chain(
            power * min(float(initial[c]), cap), power * np.minimum(logits[c].astype(np.float64), cap),
            exps[c].astype(np.float64), thin, restart_exps[c].astype(np.float64))
        assert tempered.restarted[c] == restarted, c
        assert [o[0] for o in outputs] == list(tempered.picked[c]), c


def test_tempered_thinned_chains_follow_p_g_to_the_1_minus_b_times_p_data_to_the_b():
    # G = N(0, 1), data N(1, 1), exact log-odds x - 0.5: the tempered target N(0,1) exp(b (x - 0.5)),
    # normalised, is N(b, 1). T is chosen from the tempered pilot draws, as the pipeline does.
    seed, chains, slots, power = 35, 2000, 50, 0.5
    thin, _ = thinning.choose_thin(power * calibration_logits(seed, 20_000), 0.01)
    values, _ = run_exact_problem(seed, chains, thin, slots, odds_power=power)
    target = stats.norm(power, 1.0).cdf
    threshold, _ = ks_threshold_for_chains(values, target, ALPHA, centre=power)
    assert stats.kstest(values.reshape(-1), target).statistic < threshold
    # The test has power: neither the data's N(1, 1) nor the generator's N(0, 1) passes it.
    for other in (0.0, 1.0):
        assert stats.kstest(values.reshape(-1), stats.norm(other, 1.0).cdf).statistic > 5 * threshold
    # The repeat-share estimate from tempered draws brackets the observed share of the tempered chains:
    # it lies in [rho(T) - dilution, rho(T)] (module docstring), here within 4 combined standard errors.
    _, result = run_exact_problem(seed + 1, chains, thin, 20, odds_power=power)
    tempered_draws = power * calibration_logits(seed + 1, 20_000)
    estimate = thinning.estimate_repeat_share(tempered_draws, thin)
    dilution = thinning.restart_dilution(tempered_draws, thin, 20)
    tally = result.tally()
    slack = 4 * np.hypot(tally.standard_error, estimate.at_target_se)
    assert estimate.at_target - dilution - slack < tally.share < estimate.at_target + slack


@pytest.mark.parametrize("thin", [1, 3])
def test_unthinned_chains_follow_it_too_with_a_larger_correlation_allowance(thin):
    # T = 1 emits every state: 50% repeats and strong correlation, still the right marginal.
    values, _ = run_exact_problem(32 + thin, 1000, thin, 100)
    target = stats.norm(1.0, 1.0).cdf
    threshold, ess = ks_threshold_for_chains(values, target, ALPHA / 2)
    assert ess < 0.8 * values.size
    assert stats.kstest(values.reshape(-1), target).statistic < threshold


def test_observed_repeat_share_matches_the_exact_expected_share():
    # A chain restarted from s_0 sits at lower odds than the stationary chain it replaces until
    # that chain's first move (monotone coupling), so E[observed share] lies in
    # [rho_T - delta, rho_T], delta = mean over slots j = 1..N-1 of rho_{jT}: the chance the
    # stationary chain is still at its real start. Large at T = 1, negligible at the auto T.
    thins, slots = (1, 4, 25), 40
    z = stats.norm.isf(ALPHA / (2 * len(thins)))
    for k, thin in enumerate(thins):
        _, result = run_exact_problem(40 + k, 2000, thin, slots)
        tally = result.tally()
        expected = exact_repeat_share(thin)
        delta = np.mean([exact_repeat_share(j * thin) for j in range(1, slots)])
        margin = z * tally.standard_error
        assert expected - delta - margin <= tally.share <= expected + margin, (thin, tally.share, expected, delta)
        if thin == 25:
            assert delta < expected / 20  # at about 1% repeats the point value is the expectation
        # The restart share is the same quantity, over chains (independent Bernoulli trials).
        restarted = result.restarted.mean()
        assert abs(restarted - expected) <= z * np.sqrt(expected * (1 - expected) / result.num_chains)


def test_the_repeat_share_estimate_from_generated_draws_matches_the_exact_value():
    draws = calibration_logits(50, 20_000)
    thins = (1, 5, 25)
    z = stats.norm.isf(ALPHA / (2 * len(thins)))
    for thin in thins:
        estimate = thinning.expected_repeat_share(draws, thin)
        se = thinning.expected_repeat_share_se(draws, thin)
        assert abs(estimate - exact_repeat_share(thin)) <= z * se, thin
        # Jensen: the share of a chain at its target exceeds (1 - its mean acceptance)^T.
        if thin > 1:
            assert estimate > (1.0 - thinning.mean_acceptance(draws)) ** thin
    assert thinning.mean_acceptance(draws) == pytest.approx(1.0 - exact_repeat_share(1), abs=0.01)


def test_the_standard_error_of_the_estimate_matches_its_spread_over_independent_draws():
    # M independent calibration sets: the spread of the estimates against the mean delta-method
    # SE. Their ratio's acceptance band is the chi-square interval of a standard deviation
    # estimated from M normal values.
    sets, n, thins = 60, 20_000, (1, 5, 25)
    draws = [calibration_logits(1000 + m, n) for m in range(sets)]
    a = ALPHA / len(thins)
    low, high = (np.sqrt(stats.chi2.ppf(q, sets - 1) / (sets - 1)) for q in (a / 2, 1 - a / 2))
    for thin in thins:
        estimates = [thinning.expected_repeat_share(d, thin) for d in draws]
        ses = [thinning.expected_repeat_share_se(d, thin) for d in draws]
        assert low <= np.std(estimates, ddof=1) / np.mean(ses) <= high, thin


def test_the_estimate_at_the_real_samples_matches_the_exact_value():
    # The real samples' mean of (1 - a_hat(x))^T: its SE over the real samples, plus the error of
    # a_hat, which is at most the DKW bound on the generated draws' empirical CDF (the integrand
    # min(1, exp(l' - l)) is monotone in l' with values in [0, 1]) times T (the power's slope).
    draws, real = calibration_logits(52, 200_000), 0.5 + streams.latents(53, Stream.CALIBRATION, 0, 5000, 1)[:, 0]
    thins = (1, 5, 25)
    a = ALPHA / len(thins)
    dkw = np.sqrt(np.log(4 / a) / (2 * draws.size))
    for thin in thins:
        estimate = thinning.estimate_repeat_share(draws, thin, real.astype(np.float64))
        bound = stats.norm.isf(a / 4) * estimate.at_data_se + thin * dkw
        assert abs(estimate.at_data - exact_repeat_share(thin)) <= bound, thin
        assert estimate.share == max(estimate.at_target, estimate.at_data)
        assert estimate.to_json()["share"] == estimate.share


def test_choose_thin_sees_an_all_real_top_block_only_through_the_real_samples():
    # An isotonic map whose top block holds only real samples gives it odds about n (here
    # log-odds 9.5). Generated draws never reach it, 5% of the real samples sit in it, and a chain
    # that starts there accepts nothing for thousands of steps.
    draws = calibration_logits(54, 20_000)
    real = np.concatenate([1.0 + streams.latents(55, Stream.CALIBRATION, 0, 9500, 1)[:, 0], np.full(500, 10.0)]) - 0.5
    thin, share = thinning.choose_thin(draws, 0.01)
    assert thin < 64 and share <= 0.01
    with pytest.raises(ConfigError, match="no thinning interval up to 4096"):
        thinning.choose_thin(draws, 0.01, max_thin=4096, calibrated_real_logits=real)
    estimate = thinning.estimate_repeat_share(draws, thin, real)
    assert estimate.at_data > 0.05 > 0.01 >= estimate.at_target


def test_the_run_time_check_flags_chains_caught_in_odds_no_draw_tested():
    # Proposals of the exact problem, but 1 in 3,000 lands in a block with log-odds 9.5 that the
    # draws behind the estimate never reached: a chain that finds one keeps it for thousands of steps.
    seed, chains, thin, slots = 56, 1000, 25, 40
    length = thin * slots
    draws = calibration_logits(seed, 20_000)
    logits = streams.latents(seed, Stream.PROPOSALS, 0, chains * length, 1).reshape(chains, length) - 0.5
    rare = np.random.default_rng(seed).random(logits.shape) < 1 / 3000
    logits = np.where(rare, np.float32(9.5), logits)
    start = streams.latents(seed, Stream.DRS_PILOT, 0, chains, 1)[:, 0] + 0.5
    exps, restart = thin_draws(seed, 0, chains, length, thin)
    result = thinning.thinned_chains(logits, start, exps, thin, restart)
    tally = result.tally()
    assert tally.excess_z(thinning.estimate_repeat_share(draws, thin)) > 10
    assert tally.share > 0.05


def test_acceptance_estimates_are_uniformly_close_to_the_exact_ones():
    draws = calibration_logits(51, 5000)
    n, delta = draws.size, ALPHA
    # Each estimate is a mean of n - 1 terms in [0, 1]: Hoeffding with a union bound over the n draws.
    bound = np.sqrt(np.log(2 * n / delta) / (2 * (n - 1)))
    estimate = thinning.acceptance_probabilities(draws)
    assert np.max(np.abs(estimate - exact_acceptance(draws + 0.5))) <= bound
    # The estimates do not depend on the logits' origin (odds known up to a constant factor).
    np.testing.assert_allclose(thinning.acceptance_probabilities(draws + 7.0), estimate, atol=1e-12)
    assert thinning.expected_repeat_share(draws + 7.0, 9) == pytest.approx(
        thinning.expected_repeat_share(draws, 9), rel=1e-9
    )


def test_auto_thin_keeps_expected_and_observed_repeats_within_the_budget():
    # The observed share differs from the budget by the chains' sampling error (per chain) and
    # by the error of the share estimated from the calibration draws; three of their combined SE.
    budget, seed = 0.01, 60
    draws = calibration_logits(seed, 20_000)
    thin, expected = thinning.choose_thin(draws, budget)
    assert expected <= budget < thinning.expected_repeat_share(draws, thin - 1)
    assert expected == thinning.expected_repeat_share(draws, thin)
    _, result = run_exact_problem(seed, 2000, thin, 40)
    tally = result.tally()
    se = np.hypot(tally.standard_error, thinning.expected_repeat_share_se(draws, thin))
    assert tally.share <= budget + 3 * se
    assert tally.share_of_outputs <= tally.share
    assert abs(tally.excess_z(thinning.estimate_repeat_share(draws, thin))) < 3


def test_choose_thin_edge_cases():
    same = np.zeros(100)  # every draw alike: every move is accepted, T = 1 has no repeats
    thin, share = thinning.choose_thin(same, 0.01)
    assert thin == 1 and share == pytest.approx(0.0, abs=1e-12)
    spread = np.linspace(-3.0, 3.0, 1000)
    with pytest.raises(ConfigError, match="no thinning interval up to 2"):
        thinning.choose_thin(spread, 1e-6, max_thin=2)
    for bad in (0.0, 1.0, -0.1, float("nan"), True):
        with pytest.raises(ConfigError, match="budget"):
            thinning.choose_thin(spread, bad)
    with pytest.raises(ValueError, match="at least 2 scores"):
        thinning.expected_repeat_share(np.zeros(1), 3)
    with pytest.raises(ValueError, match="NaN or infinite"):
        thinning.expected_repeat_share(np.array([0.0, np.inf]), 3)


# --------------------------------------------------------- tallies and plans


def test_repeat_tally_standard_error_treats_chains_as_units():
    _, result = run_exact_problem(70, 300, 2, 20)
    tally = result.tally()
    per_chain = result.repeat.sum(axis=1)
    assert tally.share == per_chain.sum() / (300 * 19)
    assert tally.standard_error == pytest.approx(per_chain.std(ddof=1) / np.sqrt(300) / 19, rel=1e-9)
    assert tally.share_of_outputs == per_chain.sum() / (300 * 20)
    record = tally.to_json()
    assert record["repeat_share"] == tally.share and record["chains"] == 300


def test_flat_outputs_are_chain_major():
    _, result = run_exact_problem(71, 5, 3, 4)
    flat = result.flat()
    assert all(v.shape == (20,) for v in flat.values())
    np.testing.assert_array_equal(flat["chain_row"], np.repeat(np.arange(5), 4))
    np.testing.assert_array_equal(flat["emit_step"], np.tile([2, 5, 8, 11], 5))
    np.testing.assert_array_equal(flat["picked"], result.picked.reshape(-1))
    assert result.proposals_per_output == 3.0


def test_plan_chains():
    plan = thinning.plan_chains(1000, 8, 64)
    assert (plan.num_chains, plan.chain_length, plan.num_outputs) == (16, 512, 1024)
    assert plan.proposals_per_output == 16 * 512 / 1000
    small = thinning.plan_chains(10, 5)
    assert (small.num_chains, small.outputs_per_chain, small.chain_length) == (1, 10, 50)
    assert thinning.chain_length(64, 12) == 768
    for call in (lambda: thinning.plan_chains(0, 3), lambda: thinning.plan_chains(10, 0),
                 lambda: thinning.chain_length(0, 3), lambda: thinning.plan_chains(10, True)):
        with pytest.raises(ConfigError):
            call()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: thinning.thinned_chains(np.zeros((2, 4)), np.zeros(2), np.ones((2, 4)), 0, np.ones((2, 0))), "T must"),
        (lambda: thinning.thinned_chains(np.zeros((2, 4)), np.zeros(2), np.ones((2, 4)), 5, np.ones((2, 4))), "L >= T"),
        (lambda: thinning.thinned_chains(np.zeros((2, 4)), np.zeros(3), np.ones((2, 4)), 2, np.ones((2, 1))), "initial_logits has 3"),
        (lambda: thinning.thinned_chains(np.zeros((2, 4)), np.zeros(2), np.ones((2, 3)), 2, np.ones((2, 1))), "exponentials"),
        (lambda: thinning.thinned_chains(np.zeros((2, 4)), np.zeros(2), np.ones((2, 4)), 2, np.ones((2, 2))), "restart_exponentials"),
        (lambda: thinning.thinned_chains(np.full((2, 4), np.nan), np.zeros(2), np.ones((2, 4)), 2, np.ones((2, 1))), "proposal_logits"),
        (lambda: thinning.thinned_chains(np.zeros((2, 4), np.int64), np.zeros(2), np.ones((2, 4)), 2, np.ones((2, 1))), "float32 or float64"),
    ],
)
def test_invalid_input_raises_a_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
