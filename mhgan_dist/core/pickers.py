"""The MH-GAN, DRS and plain-generator pickers, vectorised over many chains.

Each chain owns ``K`` proposals with discriminator scores given as log-odds
(logits, float32 or float64, finite). A picker returns, per chain, the index
in ``0 .. K-1`` of the proposal it emits. Scores are never turned into
probabilities: a float32 sigmoid saturates beyond |logit| ~ 17, where the odds
ratio D/(1-D) would become 0 or infinite.

Tempering and clipping (options of mh and drs, and of
:func:`mhgan_dist.core.thinning.thinned_chains`): the chains use the log-odds
b * min(l, cap) instead of l (:func:`target_logits`). For mh that makes the
target p_G x min(odds, exp(cap))^b: with an exact D and no cap,
p_G^(1-b) p_data^b normalised; b = 1 is the paper's, b -> 0 the plain
generator. The cap is a quantile of the calibrated log-odds of the generated
calibration draws (:func:`odds_cap_logit`). For drs the same transform is
applied to the proposals and to the pilot maximum, so DRS's acceptance
probability, proportional to the transformed odds, targets the same tempered,
clipped distribution. With b = 1 and no cap the scores are passed on untouched,
so picks are bit for bit those without the options.

Randomness comes in as arrays, one row per chain (see :mod:`mhgan_dist.core.streams`
for the keyed streams the pipeline uses), so picks depend only on a chain's own
scores and draws, never on how chains are batched.

numpy only: no torch, no Ray, no files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["PickResult", "PICKERS", "mh", "drs", "base", "drs_shifted_scores", "target_logits", "odds_cap_logit",
           "check_odds_options"]

PICKERS = ("mh", "drs", "base")

DRS_EPSILON = 1e-6
DRS_GAMMA_PERCENTILE = 95.0


@dataclass(frozen=True)
class PickResult:
    """Per-chain outcome of a picker, all arrays of length C (number of chains).

    picked:       int64, index in [0, K) of the emitted proposal.
    accepts:      int64, mh: accepted moves of the pass that produced the output;
                  drs: proposals that passed the acceptance test; base: 0.
    restarted:    bool, mh: the chain accepted nothing from its real start and
                  was re-run from its first proposal; always False for drs, base.
    accept_prob:  float64 in [0, 1], mh: acceptance probability of the pass's
                  last step; drs: acceptance probability of the emitted
                  proposal; base: 1.
    """

    picked: np.ndarray
    accepts: np.ndarray
    restarted: np.ndarray
    accept_prob: np.ndarray

    def __len__(self) -> int:
        return int(self.picked.shape[0])


def check_odds_options(odds_power: float, odds_cap_logit: float | None) -> None:
    """ValueError unless odds_power is in (0, 1] and odds_cap_logit is None or finite."""
    if isinstance(odds_power, bool) or not isinstance(odds_power, (int, float, np.floating)) \
            or not 0.0 < odds_power <= 1.0:
        raise ValueError(f"odds_power must be a number in (0, 1], got {odds_power!r}")
    if odds_cap_logit is not None and (isinstance(odds_cap_logit, bool)
                                       or not isinstance(odds_cap_logit, (int, float, np.floating))
                                       or not np.isfinite(odds_cap_logit)):
        raise ValueError(f"odds_cap_logit must be None or a finite log-odds, got {odds_cap_logit!r}")


def target_logits(logits: np.ndarray, odds_power: float = 1.0, odds_cap_logit: float | None = None) -> np.ndarray:
    """The log-odds the chains compare: odds_power * min(logits, odds_cap_logit), in the input's dtype.

    logits: any shape, float32 or float64, finite. odds_power: b in (0, 1];
    odds_cap_logit: None (no cap) or a finite log-odds. Returns ``logits``
    itself (the same array, untouched) when b = 1 and there is no cap, so that
    the default picks are bit for bit those without tempering. Both steps are
    monotone, so their order does not matter: b min(l, cap) = min(b l, b cap).
    """
    check_odds_options(odds_power, odds_cap_logit)
    if odds_cap_logit is None and odds_power == 1.0:
        return logits
    out = np.asarray(logits)
    if odds_cap_logit is not None:
        out = np.minimum(out, out.dtype.type(odds_cap_logit))
    if odds_power != 1.0:
        out = out * out.dtype.type(odds_power)
    return out


def odds_cap_logit(calibrated_generated_logits: np.ndarray, quantile: float) -> float:
    """The ``quantile`` (in (0, 1]) of generated draws' calibrated log-odds: the cap of clipped chains.

    calibrated_generated_logits: [n >= 1] float, finite: the calibrated scores of
    the generated calibration draws. numpy's default (linear) quantile; 1 gives
    their maximum, the odds the capped isotonic calibration also stops at.
    """
    draws = np.asarray(calibrated_generated_logits, dtype=np.float64)
    if draws.ndim != 1 or draws.size == 0 or not np.isfinite(draws).all():
        raise ValueError("calibrated_generated_logits must be a non-empty 1-D array of finite log-odds")
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float, np.floating)) or not 0.0 < quantile <= 1.0:
        raise ValueError(f"the odds cap quantile must be a number in (0, 1], got {quantile!r}")
    return float(np.quantile(draws, quantile))


def _check_logits(name: str, logits: np.ndarray, ndim: int) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be float32 or float64 log-odds, got dtype {logits.dtype}")
    if logits.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {logits.shape}")
    if logits.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if ndim == 2 and logits.shape[1] < 1:
        raise ValueError(f"{name} must have K >= 1 proposals per chain, got shape {logits.shape}")
    if not np.isfinite(logits).all():
        bad = "NaN" if np.isnan(logits).any() else "infinite"
        raise ValueError(f"{name} contains {bad} scores; scores must be finite log-odds")
    return logits


def _check_draws(name: str, draws: np.ndarray, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    draws = np.asarray(draws)
    if draws.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {draws.shape}")
    # One comparison pass each; NaN fails both.
    if draws.size and not ((draws >= low).all() and (high == np.inf or (draws <= high).all())):
        raise ValueError(f"{name} must lie in [{low}, {high}] with no NaN")
    return draws


def _step_major(chain_major: np.ndarray) -> np.ndarray:
    """[C, S] -> contiguous [S, C], transposed in tiles of chains that fit in cache."""
    if chain_major.T.flags.c_contiguous:
        return chain_major.T
    chains, steps = chain_major.shape
    out = np.empty((steps, chains), dtype=chain_major.dtype)
    tile = 128
    for first in range(0, chains, tile):
        out[:, first : first + tile] = chain_major[first : first + tile].T
    return out


def _independence_chain(
    logits_by_step: np.ndarray, start: np.ndarray, thresholds_by_step: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs independence MH over steps (rows) for many chains (columns).

    logits_by_step: [S, C] proposal log-odds; start: [C] log-odds of the state
    before step 0; thresholds_by_step: [S, C] proposal log-odds plus a standard
    exponential E = -log U. A step accepts iff U <= odds'/odds, that is
    current - proposed <= E, that is current <= threshold: min(1, exp(l' - l))
    in log-odds, which cannot overflow.
    Returns (last accepted step or -1, accepted moves, last step's acceptance
    probability), each [C].
    """
    steps, chains = logits_by_step.shape
    if steps == 0:
        return np.full(chains, -1, dtype=np.int64), np.zeros(chains, dtype=np.int64), np.ones(chains)
    as_int = np.int32 if logits_by_step.dtype == np.float32 else np.int64
    current = start.astype(logits_by_step.dtype, copy=True)
    current_bits = current.view(as_int)
    proposal_bits = logits_by_step.view(as_int)
    accepted = np.empty((steps, chains), dtype=bool)
    mask = np.empty(chains, dtype=as_int)
    diff = np.empty(chains, dtype=as_int)
    for step in range(steps):
        if step == steps - 1:
            before_last = current.copy()
        np.less_equal(current, thresholds_by_step[step], out=accepted[step])
        # A branch-free select on the bit patterns: a masked copy (np.copyto with
        # where=, np.where) is several times slower here, and arithmetic blending
        # is not exact. mask is all ones where accepted.
        np.negative(accepted[step].view(np.int8), out=mask, casting="unsafe")
        np.bitwise_xor(current_bits, proposal_bits[step], out=diff)
        np.bitwise_and(diff, mask, out=diff)
        np.bitwise_xor(current_bits, diff, out=current_bits)
    accepts = np.count_nonzero(accepted, axis=0).astype(np.int64)
    last = (steps - 1) - np.argmax(accepted[::-1], axis=0).astype(np.int64)
    last[accepts == 0] = -1
    gap = before_last.astype(np.float64) - logits_by_step[-1]
    final_prob = np.exp(np.minimum(0.0, -gap))
    return last, accepts, final_prob


def mh(
    proposal_logits: np.ndarray,
    initial_logits: np.ndarray,
    exponentials: np.ndarray,
    restart_exponentials: np.ndarray | Callable[[np.ndarray], np.ndarray],
    *,
    odds_power: float = 1.0,
    odds_cap_logit: float | None = None,
) -> PickResult:
    """Independence Metropolis-Hastings with the MH-GAN start and restart rules.

    proposal_logits:      [C, K] (calibrated) log-odds of each chain's proposals s_1..s_K.
    initial_logits:       [C] log-odds of the real held-out sample each chain starts at.
    exponentials:         [C, K] standard exponential variates (-log U) for steps 1..K.
    restart_exponentials: [C, K-1] variates for the restart pass (steps 2..K), or a
                          function mapping the row indices of the chains that restart
                          to their [n, K-1] variates, so that they are drawn only when needed.

    From state x, proposal x' is accepted with probability min(1, odds(x')/odds(x)).
    A chain that accepts nothing is re-run from s_1 over s_2..s_K with the restart
    variates, so a real sample is never emitted.
    odds_power, odds_cap_logit: tempering and clipping (module docstring): the
    odds become min(odds, exp(cap))^b, for the start as for the proposals;
    accept_prob is that of the transformed odds.
    """
    proposal_logits = _check_logits("proposal_logits", proposal_logits, 2)
    chains, k = proposal_logits.shape
    initial_logits = _check_logits("initial_logits", initial_logits, 1)
    proposal_logits = target_logits(proposal_logits, odds_power, odds_cap_logit)
    initial_logits = target_logits(initial_logits, odds_power, odds_cap_logit)
    if initial_logits.shape[0] != chains:
        raise ValueError(
            f"initial_logits has {initial_logits.shape[0]} chains but proposal_logits has {chains}"
        )
    exponentials = _check_draws("exponentials", exponentials, (chains, k), 0.0, np.inf)
    if not callable(restart_exponentials):
        restart_exponentials = _check_draws(
            "restart_exponentials", restart_exponentials, (chains, k - 1), 0.0, np.inf
        )

    by_step = _step_major(proposal_logits)
    thresholds = by_step + _step_major(exponentials).astype(by_step.dtype, copy=False)
    picked, accepts, accept_prob = _independence_chain(by_step, initial_logits, thresholds)
    restarted = picked < 0
    if restarted.any():
        rows = np.flatnonzero(restarted)
        rerun = proposal_logits[rows]
        if callable(restart_exponentials):
            restart_draws = _check_draws(
                "restart_exponentials", restart_exponentials(rows), (rows.size, k - 1), 0.0, np.inf
            )
        else:
            restart_draws = restart_exponentials[rows]
        rerun_thresholds = rerun[:, 1:] + restart_draws.astype(rerun.dtype, copy=False)
        last, re_accepts, re_prob = _independence_chain(
            _step_major(rerun[:, 1:]), rerun[:, 0], _step_major(rerun_thresholds)
        )
        picked[rows] = last + 1  # -1 (nothing accepted) maps to s_1, index 0
        accepts[rows] = re_accepts
        accept_prob[rows] = re_prob
    return PickResult(picked, accepts, restarted, accept_prob)


def drs_shifted_scores(
    proposal_logits: np.ndarray, pilot_max_logit: float, epsilon: float = DRS_EPSILON
) -> np.ndarray:
    """DRS's F with gamma = 0: D~ - D~_M - log(1 - exp(D~ - D~_M - eps)), float64 [C, K].

    D~_M is the chain's running maximum logit, floored at the pilot maximum, so it
    is bumped whenever a proposal exceeds it.
    """
    logits = proposal_logits.astype(np.float64)
    running_max = np.maximum(np.maximum.accumulate(logits, axis=1), float(pilot_max_logit))
    delta = logits - running_max
    return delta - np.log(-np.expm1(delta - epsilon))


def drs(
    proposal_logits: np.ndarray,
    pilot_max_logit: float,
    uniforms: np.ndarray,
    gamma: float | None = None,
    gamma_percentile: float = DRS_GAMMA_PERCENTILE,
    epsilon: float = DRS_EPSILON,
    *,
    odds_power: float = 1.0,
    odds_cap_logit: float | None = None,
) -> PickResult:
    """Discriminator Rejection Sampling (Azadi et al., 2019) over each chain's proposals.

    proposal_logits: [C, K] log-odds (raw or calibrated: the same the chain uses).
    pilot_max_logit: maximum logit over the pilot draws (same raw/calibrated scale).
    uniforms:        [C, K] in [0, 1).
    gamma:           shift of F; None = per chain, the ``gamma_percentile`` of F with gamma = 0.
    Proposal k is accepted with probability sigmoid(F_k); the first accepted one is
    emitted, or the highest-scoring one when none is.
    odds_power, odds_cap_logit: tempering and clipping, applied to the proposals
    and to the pilot maximum alike (module docstring); "highest-scoring" then
    means highest transformed score (the first of those at the cap).
    """
    proposal_logits = _check_logits("proposal_logits", proposal_logits, 2)
    if not np.isfinite(pilot_max_logit):
        raise ValueError(f"pilot_max_logit must be finite, got {pilot_max_logit}")
    proposal_logits = target_logits(proposal_logits, odds_power, odds_cap_logit)
    if odds_power != 1.0 or odds_cap_logit is not None:
        pilot_max_logit = float(target_logits(np.array([pilot_max_logit], np.float64), odds_power,
                                              odds_cap_logit)[0])
    if not 0.0 <= gamma_percentile <= 100.0:
        raise ValueError(f"gamma_percentile must be in [0, 100], got {gamma_percentile}")
    if not epsilon > 0.0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    chains, k = proposal_logits.shape
    uniforms = _check_draws("uniforms", uniforms, (chains, k), 0.0, 1.0)

    f = drs_shifted_scores(proposal_logits, pilot_max_logit, epsilon)
    if gamma is None:
        f -= np.percentile(f, gamma_percentile, axis=1, keepdims=True)
    else:
        if not np.isfinite(gamma):
            raise ValueError(f"gamma must be finite, got {gamma}")
        f -= gamma
    # u < sigmoid(F)  <=>  logit(u) < F, which never overflows.
    with np.errstate(divide="ignore"):
        logit_u = np.log(uniforms) - np.log1p(-uniforms)
    passed = logit_u < f
    any_passed = passed.any(axis=1)
    picked = np.where(any_passed, passed.argmax(axis=1), proposal_logits.argmax(axis=1)).astype(np.int64)
    picked_f = np.take_along_axis(f, picked[:, None], axis=1)[:, 0]
    accept_prob = 0.5 * (1.0 + np.tanh(0.5 * picked_f))  # sigmoid, stable for large |F|
    return PickResult(
        picked=picked,
        accepts=passed.sum(axis=1).astype(np.int64),
        restarted=np.zeros(chains, dtype=bool),
        accept_prob=accept_prob,
    )


def base(proposal_logits: np.ndarray) -> PickResult:
    """The plain generator: every chain emits its first proposal."""
    proposal_logits = _check_logits("proposal_logits", proposal_logits, 2)
    chains = proposal_logits.shape[0]
    return PickResult(
        picked=np.zeros(chains, dtype=np.int64),
        accepts=np.zeros(chains, dtype=np.int64),
        restarted=np.zeros(chains, dtype=bool),
        accept_prob=np.ones(chains, dtype=np.float64),
    )
