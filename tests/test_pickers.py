"""The pickers against a slow, obviously correct loop, and against known distributions."""

import numpy as np
import pytest
from scipy import stats

from mhgan_dist import pickers, streams
from mhgan_dist.streams import Stream


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
