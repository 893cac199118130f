"""Long thinned MH chains: many output samples per chain, and the choice of the thinning interval T.

The paper's mode (:func:`mhgan_dist.core.pickers.mh`) spends K proposals on every
output: one independent chain per sample. This module's mode runs fewer, long
chains and emits every T-th state, so an output costs T proposals instead of K.
The price is correlation between consecutive outputs of a chain; in particular
a chain that accepts nothing during T steps emits the same proposal again (a
*repeat*). T is chosen so that the expected share of repeats stays within a
budget (:func:`choose_thin`).

The chain, per chain over its L proposals s_0 .. s_{L-1} (log-odds l_k):

- It starts at the calibrated log-odds of a real held-out sample (the state
  before step 0), as the paper's chains do, so that it is at its target from
  the start.
- Step k proposes s_k and accepts it iff U_k <= min(1, odds(s_k)/odds(state)),
  U_k = exp(-E_k) with E_k a standard exponential (the pickers' kernel).
- Emission slots: N = L // T; slot j covers steps jT .. (j+1)T - 1 and the chain
  emits its state after the slot's last step e_j = (j+1)T - 1. Steps from N*T
  on are not run. Every chain emits exactly N outputs.
- Restart (the paper's "cap out", applied to slot 0): a chain that accepted
  nothing in steps 0 .. T-1 is still at its real sample, which must never be
  emitted. It is re-run from s_0 over steps 1 .. T-1 with separate restart
  variates, then continues over steps T .. with its own variates. So no output
  is emitted before the chain's first generated state, and no real sample is
  ever emitted.
- Output j *repeats* when j >= 1 and slot j accepted no move: its proposal is
  the previous output of the same chain.

Why this rule: started from a real sample (a draw from the target p when D
is exact and calibrated), the chain without restarts would be at p after every
step. Couple it with the restarted chain (same proposals and step variates):
every slot-0 proposal was rejected from the real start, so has lower odds, and
independence MH is monotone in the odds (a lower state accepts whatever a
higher one accepts), so the restarted chain stays at or below the stationary
one and joins it at the stationary chain's first move. Hence

- output j differs from a stationary chain's only if that chain is still at
  its real start after step (j+1)T - 1: probability rho((j+1)T), where
  rho(t) = E_p[(1 - a(X))^t], a(x) the acceptance probability from state x;
  slot 0 is off for at most a share rho(T) of the chains (the expected repeat
  share: within the budget under ``--thin auto``) and later slots far less;
- the expected share of repeats lies in [rho(T) - mean_{1<=j<N} rho(jT), rho(T)]:
  :func:`expected_repeat_share` is an upper bound, tight at the T chosen by
  :func:`choose_thin` (at T = 1 the restarted chains' lower start shows).

Tempering and clipping: :func:`thinned_chains` takes the pickers' options
(``odds_power`` b and ``odds_cap_logit``) and runs on the log-odds
b * min(l, cap), so its target is p_G x min(odds, cap)^b, normalised. The
estimates below hold for that target with r = exp(b * min(l, cap)) in place of
the odds. One thing changes: a real start is a draw of p_data, no longer of the
target, so the first outputs of a chain carry a short transient towards it (the
real samples' estimate of the repeat share, which :func:`choose_thin` also
holds to the budget, covers the start). The estimators (repeat share, acceptance, the choice of T) take the
log-odds the chain compares: pass them :func:`mhgan_dist.core.pickers.target_logits`
of the calibrated scores when tempering or clipping (the pipeline does).

Randomness comes in as arrays, one row per chain (the pipeline draws them with
:mod:`mhgan_dist.core.streams`: ``Stream.THIN_STEPS`` [L] and ``Stream.THIN_RESTART``
[T-1] per chain, ``Stream.REAL_INIT`` for the real start), so outputs depend
only on a chain's own scores and draws, never on how chains are batched.

numpy only: no torch, no Ray, no files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mhgan_dist.core.calibrators import check_scores
from mhgan_dist.errors import ConfigError
from mhgan_dist.core.pickers import _check_draws, _check_logits, _step_major, target_logits

__all__ = [
    "DEFAULT_REPEAT_BUDGET",
    "DEFAULT_OUTPUTS_PER_CHAIN",
    "MAX_THIN",
    "ThinnedResult",
    "RepeatTally",
    "ChainPlan",
    "thinned_chains",
    "plan_chains",
    "chain_length",
    "acceptance_probabilities",
    "expected_repeat_share",
    "expected_repeat_share_se",
    "RepeatEstimate",
    "estimate_repeat_share",
    "restart_dilution",
    "mean_acceptance",
    "choose_thin",
]

DEFAULT_REPEAT_BUDGET = 0.01
"""Default budget of ``--thin auto``: expected share of outputs that repeat their predecessor."""
DEFAULT_OUTPUTS_PER_CHAIN = 64
"""Outputs per long chain unless configured: 64 emissions dilute the restart of slot 0 to at
most budget/64 of the outputs, while a part of a few thousand chains still vectorises well."""
MAX_THIN = 1 << 16
"""Largest T :func:`choose_thin` considers."""


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class RepeatTally:
    """Mergeable counts of repeats, per chain, for the observed repeat share and its standard error.

    chains: chains counted; transitions: outputs that have a predecessor in their
    chain (N - 1 per chain); repeats: those equal to their predecessor. The
    ``*_sq`` and ``cross`` fields are per-chain sums of squares and products
    (transitions_sq = sum n_c^2, repeats_sq = sum R_c^2, cross = sum R_c n_c),
    which give the standard error with chains as the independent units.
    Tallies of disjoint parts add with ``+``.
    """

    chains: int = 0
    outputs: int = 0
    transitions: int = 0
    repeats: int = 0
    transitions_sq: int = 0
    repeats_sq: int = 0
    cross: int = 0

    @staticmethod
    def from_counts(outputs_per_chain: np.ndarray, repeats_per_chain: np.ndarray) -> "RepeatTally":
        """The tally of chains with the given outputs (>= 1 each) and repeats, int arrays [C]."""
        outputs = np.asarray(outputs_per_chain, dtype=np.int64)
        repeats = np.asarray(repeats_per_chain, dtype=np.int64)
        if outputs.shape != repeats.shape or outputs.ndim != 1:
            raise ValueError("outputs_per_chain and repeats_per_chain must be 1-D arrays of one length")
        if (outputs < 1).any() or (repeats < 0).any() or (repeats >= outputs).any():
            raise ValueError("each chain needs >= 1 output and fewer repeats than outputs")
        transitions = outputs - 1
        return RepeatTally(
            chains=int(outputs.size), outputs=int(outputs.sum()), transitions=int(transitions.sum()),
            repeats=int(repeats.sum()), transitions_sq=int(np.sum(transitions * transitions)),
            repeats_sq=int(np.sum(repeats * repeats)), cross=int(np.sum(repeats * transitions)),
        )

    def __add__(self, other: "RepeatTally") -> "RepeatTally":
        return RepeatTally(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    @property
    def share(self) -> float:
        """Observed repeats / transitions: comparable with :func:`expected_repeat_share`; NaN if none."""
        return self.repeats / self.transitions if self.transitions else math.nan

    @property
    def share_of_outputs(self) -> float:
        """Repeats / all outputs (first outputs of chains never repeat); NaN if none."""
        return self.repeats / self.outputs if self.outputs else math.nan

    @property
    def standard_error(self) -> float:
        """Standard error of :attr:`share` with chains as independent units (ratio estimator).

        Repeats within a chain are correlated (a chain stuck at a high-odds state
        repeats several times running), so outputs are not independent trials;
        chains are. NaN with fewer than 2 chains or no transitions.
        """
        c, n = self.chains, self.transitions
        if c < 2 or n == 0:
            return math.nan
        s = self.repeats / n
        residual_sq = self.repeats_sq - 2.0 * s * self.cross + s * s * self.transitions_sq
        mean_n = n / c
        return math.sqrt(max(residual_sq, 0.0) / (c * (c - 1))) / mean_n

    def excess_z(self, estimate: "RepeatEstimate") -> float:
        """(observed share - expected share) / combined standard error: a run-time check of the estimate.

        Far above 3 means chains repeat more than the calibration draws predicted,
        typically because they found states whose calibrated odds no draw had
        tested (an all-real top block of an isotonic map) and stay there. NaN
        without a standard error.
        """
        from_target = estimate.at_data is None or estimate.at_target >= estimate.at_data
        se_estimate = estimate.at_target_se if from_target else estimate.at_data_se
        se = math.hypot(self.standard_error, se_estimate or 0.0)
        return (self.share - estimate.share) / se if se > 0 else math.nan

    def to_json(self) -> dict[str, float | int | None]:
        """The counts and shares; an undefined share (NaN) is None, which strict JSON allows."""
        return {
            **asdict(self),
            "repeat_share": _finite_or_none(self.share),
            "repeat_share_se": _finite_or_none(self.standard_error),
            "repeat_share_of_outputs": _finite_or_none(self.share_of_outputs),
        }


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class ThinnedResult:
    """Outputs of C long chains, N = chain_length // thin per chain, in (chain, slot) order.

    thin:          T, steps per emission slot.
    chain_length:  L, proposals per chain given (steps from N*T on are not run).
    picked:        int64 [C, N], index in [0, N*T) of the emitted proposal within its chain.
    accepts:       int64 [C, N], moves accepted during the slot (slot 0 of a restarted
                   chain: those of the restart pass); 0 for j >= 1 means a repeat.
    repeat:        bool [C, N], output j equals output j - 1 of the chain; False at j = 0.
    accept_prob:   float64 [C, N] in [0, 1], acceptance probability of the slot's last
                   step (1 for slot 0 of a chain restarted with T = 1, which ran no step).
    restarted:     bool [C], the chain accepted nothing in slot 0 from its real start.
    """

    thin: int
    chain_length: int
    picked: np.ndarray
    accepts: np.ndarray
    repeat: np.ndarray
    accept_prob: np.ndarray
    restarted: np.ndarray

    @property
    def num_chains(self) -> int:
        return int(self.picked.shape[0])

    @property
    def outputs_per_chain(self) -> int:
        return int(self.picked.shape[1])

    @property
    def emit_steps(self) -> np.ndarray:
        """int64 [N], the step after which slot j emits: (j + 1) T - 1, the same for every chain."""
        return np.arange(1, self.outputs_per_chain + 1, dtype=np.int64) * self.thin - 1

    @property
    def proposals_per_output(self) -> float:
        """Proposals (G and D passes) spent per output: L / N (= T when L is a multiple of T)."""
        return self.chain_length / self.outputs_per_chain

    def tally(self) -> RepeatTally:
        """This result's repeat counts; add the tallies of all parts for a run's totals."""
        per_chain = np.count_nonzero(self.repeat, axis=1)
        return RepeatTally.from_counts(np.full(self.num_chains, self.outputs_per_chain), per_chain)

    def flat(self) -> dict[str, np.ndarray]:
        """Per-output 1-D arrays of length C * N, chain-major (output = row * N + slot).

        chain_row (int64, 0-based row within this part), slot (int64), emit_step
        (int64), picked, accepts, repeat, accept_prob, and restarted (the chain's flag).
        """
        c, n = self.picked.shape
        return {
            "chain_row": np.repeat(np.arange(c, dtype=np.int64), n),
            "slot": np.tile(np.arange(n, dtype=np.int64), c),
            "emit_step": np.tile(self.emit_steps, c),
            "picked": self.picked.reshape(-1),
            "accepts": self.accepts.reshape(-1),
            "repeat": self.repeat.reshape(-1),
            "accept_prob": self.accept_prob.reshape(-1),
            "restarted": np.repeat(self.restarted, n),
        }


# ------------------------------------------------------------------- kernel


def _run_steps(
    logits_by_step: np.ndarray,
    thresholds_by_step: np.ndarray,
    current: np.ndarray,
    code: np.ndarray,
    count: np.ndarray,
    first_step: int,
    slot_ends: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independence MH over steps (rows) for many chains (columns), with snapshots.

    logits_by_step, thresholds_by_step: [S, C] proposal log-odds, and log-odds
    plus the step's exponential (accept iff current <= threshold, as in
    :func:`mhgan_dist.core.pickers._independence_chain`). current [C] (the proposals'
    dtype), code [C] and count [C] (the integer type of the same width) are
    updated in place: the state's log-odds, 1 + the chain index of the state's
    proposal (0 = the real start; local step k is chain step first_step + k),
    and the accepted moves. slot_ends: ascending local steps after which to
    snapshot (-1 = before any step). Returns the snapshots [len(slot_ends), C]
    of code and count (int64) and the acceptance probability of each snapshot's
    step (float64; 1 for a snapshot before any step).
    """
    steps, chains = logits_by_step.shape
    as_int = code.dtype
    current_bits = current.view(as_int)
    proposal_bits = logits_by_step.view(as_int)
    accepted = np.empty(chains, dtype=bool)
    mask = np.empty(chains, dtype=as_int)
    diff = np.empty(chains, dtype=as_int)
    n_slots = len(slot_ends)
    codes = np.empty((n_slots, chains), dtype=np.int64)
    counts = np.empty((n_slots, chains), dtype=np.int64)
    probs = np.ones((n_slots, chains), dtype=np.float64)
    slot = 0
    while slot < n_slots and slot_ends[slot] < 0:
        codes[slot], counts[slot] = code, count
        slot += 1
    for step in range(steps):
        at_end = slot < n_slots and slot_ends[slot] == step
        if at_end:
            gap = current.astype(np.float64) - logits_by_step[step]
        np.less_equal(current, thresholds_by_step[step], out=accepted)
        # Branch-free select on bit patterns, as in the pickers' kernel: mask is
        # all ones where accepted.
        np.negative(accepted.view(np.int8), out=mask, casting="unsafe")
        np.bitwise_xor(current_bits, proposal_bits[step], out=diff)
        np.bitwise_and(diff, mask, out=diff)
        np.bitwise_xor(current_bits, diff, out=current_bits)
        # code only grows: an accepted step's code exceeds every earlier one.
        np.bitwise_and(mask, first_step + step + 1, out=diff)
        np.maximum(code, diff, out=code)
        np.subtract(count, mask, out=count)
        if at_end:
            codes[slot], counts[slot] = code, count
            probs[slot] = np.exp(np.minimum(0.0, -gap))
            slot += 1
    assert slot == n_slots, "slot ends beyond the steps run"
    return codes, counts, probs


def _check_thin(thin: int) -> int:
    if isinstance(thin, (bool, np.bool_)) or not isinstance(thin, (int, np.integer)) or thin < 1:
        raise ConfigError(f"the thinning interval T must be an integer >= 1, not {thin!r}.")
    return int(thin)


def thinned_chains(
    proposal_logits: np.ndarray,
    initial_logits: np.ndarray,
    exponentials: np.ndarray,
    thin: int,
    restart_exponentials: np.ndarray | Callable[[np.ndarray], np.ndarray],
    *,
    odds_power: float = 1.0,
    odds_cap_logit: float | None = None,
) -> ThinnedResult:
    """Runs C long chains of independence MH and emits every T-th state (see the module's rule).

    proposal_logits:      [C, L] float32/float64 (calibrated) log-odds of each chain's proposals,
                          L >= T; the proposals' order is the chain's step order.
    initial_logits:       [C] log-odds of the real held-out sample each chain starts at.
    exponentials:         [C, L] standard exponential variates (-log U), one per step
                          (columns from N*T on are not used).
    thin:                 T >= 1, steps per output.
    restart_exponentials: [C, T-1] variates of the restart pass (steps 1..T-1), or a function
                          mapping the rows of the chains that restart (int64, ascending) to their
                          [n, T-1] variates, so that they are drawn only when needed.
    odds_power, odds_cap_logit: tempering and clipping as in :func:`mhgan_dist.core.pickers.mh`:
                          the chain runs on b * min(l, cap) (start and proposals alike);
                          b = 1 without a cap leaves the scores untouched.

    Returns a :class:`ThinnedResult` with N = L // T outputs per chain. A chain's
    outputs depend only on its own row of every argument.
    """
    thin = _check_thin(thin)
    proposal_logits = _check_logits("proposal_logits", proposal_logits, 2)
    chains, length = proposal_logits.shape
    if length < thin:
        raise ValueError(f"chains of {length} proposals cannot emit an output every {thin} steps (need L >= T)")
    initial_logits = _check_logits("initial_logits", initial_logits, 1)
    if initial_logits.shape[0] != chains:
        raise ValueError(f"initial_logits has {initial_logits.shape[0]} chains but proposal_logits has {chains}")
    exponentials = _check_draws("exponentials", exponentials, (chains, length), 0.0, np.inf)
    if not callable(restart_exponentials):
        restart_exponentials = _check_draws(
            "restart_exponentials", restart_exponentials, (chains, thin - 1), 0.0, np.inf
        )
    proposal_logits = target_logits(proposal_logits, odds_power, odds_cap_logit)
    initial_logits = target_logits(initial_logits, odds_power, odds_cap_logit)

    slots = length // thin
    used = slots * thin
    dtype = proposal_logits.dtype
    as_int = np.int32 if dtype == np.float32 else np.int64
    by_step = _step_major(proposal_logits[:, :used] if used < length else proposal_logits)
    thresholds = by_step + _step_major(exponentials[:, :used] if used < length else exponentials).astype(
        dtype, copy=False
    )

    # Slot 0 from the real start.
    current = initial_logits.astype(dtype, copy=True)
    code = np.zeros(chains, dtype=as_int)
    count = np.zeros(chains, dtype=as_int)
    codes0, counts0, probs0 = _run_steps(by_step[:thin], thresholds[:thin], current, code, count, 0, [thin - 1])
    restarted = code == 0

    if restarted.any():
        rows = np.flatnonzero(restarted)
        if callable(restart_exponentials):
            draws = _check_draws(
                "restart_exponentials", restart_exponentials(rows), (rows.size, thin - 1), 0.0, np.inf
            )
        else:
            draws = restart_exponentials[rows]
        rerun = proposal_logits[rows, :thin]
        r_current = rerun[:, 0].copy()
        r_code = np.ones(rows.size, dtype=as_int)  # the state is s_0
        r_count = np.zeros(rows.size, dtype=as_int)
        r_codes, r_counts, r_probs = _run_steps(
            _step_major(rerun[:, 1:]),
            _step_major(rerun[:, 1:] + draws.astype(dtype, copy=False)),
            r_current, r_code, r_count, 1, [thin - 2],
        )
        current[rows], code[rows], count[rows] = r_current, r_code, r_count
        codes0[0, rows], counts0[0, rows], probs0[0, rows] = r_codes[0], r_counts[0], r_probs[0]

    # Slots 1 .. N-1 continue every chain from its slot-0 state.
    rest_ends = [(j + 1) * thin - 1 - thin for j in range(1, slots)]
    codes, counts, probs = _run_steps(by_step[thin:], thresholds[thin:], current, code, count, thin, rest_ends)
    codes = np.concatenate([codes0, codes]).T
    counts = np.concatenate([counts0, counts]).T
    probs = np.ascontiguousarray(np.concatenate([probs0, probs]).T)
    assert (codes >= 1).all(), "a real start was emitted"
    accepts = np.diff(counts, axis=1, prepend=0)
    repeat = np.zeros((chains, slots), dtype=bool)
    repeat[:, 1:] = accepts[:, 1:] == 0
    return ThinnedResult(
        thin=thin,
        chain_length=length,
        picked=codes - 1,
        accepts=accepts,
        repeat=repeat,
        accept_prob=probs,
        restarted=restarted,
    )


# ----------------------------------------------------------------- planning


@dataclass(frozen=True)
class ChainPlan:
    """How many long chains of which length give ``num_samples`` outputs.

    The chains emit num_chains * outputs_per_chain >= num_samples outputs; a
    pipeline keeps the first num_samples in (chain, slot) order. Dropping the
    trailing slots of the last chain by position, never by value, biases nothing.
    """

    num_samples: int
    thin: int
    outputs_per_chain: int
    num_chains: int
    chain_length: int

    @property
    def num_outputs(self) -> int:
        return self.num_chains * self.outputs_per_chain

    @property
    def num_proposals(self) -> int:
        """G and D passes on proposals: num_chains * chain_length."""
        return self.num_chains * self.chain_length

    @property
    def proposals_per_output(self) -> float:
        """Proposals per kept output: num_proposals / num_samples (T, up to the last chain's rounding)."""
        return self.num_proposals / self.num_samples


def chain_length(outputs_per_chain: int, thin: int) -> int:
    """Proposals a chain needs to emit ``outputs_per_chain`` outputs every ``thin`` steps: N * T."""
    if isinstance(outputs_per_chain, bool) or not isinstance(outputs_per_chain, (int, np.integer)) or outputs_per_chain < 1:
        raise ConfigError(f"outputs per chain must be an integer >= 1, not {outputs_per_chain!r}.")
    return int(outputs_per_chain) * _check_thin(thin)


def plan_chains(num_samples: int, thin: int, outputs_per_chain: int = DEFAULT_OUTPUTS_PER_CHAIN) -> ChainPlan:
    """Chains of N * T proposals, N = min(outputs_per_chain, num_samples), enough for num_samples outputs."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ConfigError(f"the number of samples must be an integer >= 1, not {num_samples!r}.")
    chain_length(outputs_per_chain, thin)  # validates both
    per_chain = min(int(outputs_per_chain), int(num_samples))
    length = chain_length(per_chain, thin)
    return ChainPlan(
        num_samples=int(num_samples),
        thin=int(thin),
        outputs_per_chain=per_chain,
        num_chains=-(-int(num_samples) // per_chain),
        chain_length=length,
    )


# ---------------------------------------------------------- choosing T
#
# rho(T) = E_p[(1 - a(X))^T] is estimated two ways, both from scores alone:
#
# - at the chain's target, from generated draws x_i ~ q with calibrated log-odds
#   l_i: self-normalised importance weights w_i = r_i / sum r (r = exp(l)) turn
#   sums over q into expectations under p = q r / E_q[r];
# - at the data distribution, from the real held-out samples the chains start
#   from, with no weights: their mean of (1 - a(x))^T.
#
# With D exact and calibrated the two agree. They differ when a calibration
# block's odds cannot be checked by generated draws: an isotonic map's top
# block is often all real, so its probability is clipped to n/(n+1) and its
# odds are about n. Generated draws used for the fit never fall in it, fresh
# proposals rarely do, but a chain that meets one stays there for about n
# steps, and real samples sit there in numbers. :func:`choose_thin` therefore
# uses the larger estimate when real scores are given.


@dataclass(frozen=True)
class _Draws:
    """Generated draws' calibrated log-odds, sorted, with their prefix log-sum-exp."""

    order: np.ndarray  # argsort of the input
    sorted: np.ndarray  # ascending log-odds, float64 [n]
    prefix: np.ndarray  # prefix[i] = log sum_{j <= i} exp(sorted[j])

    @staticmethod
    def of(calibrated_generated_logits: np.ndarray) -> "_Draws":
        l = check_scores("calibrated_generated_logits", calibrated_generated_logits, 2)
        order = np.argsort(l, kind="stable")
        ls = l[order]
        return _Draws(order, ls, np.logaddexp.accumulate(ls))

    def log_weights(self) -> np.ndarray:
        """log w_i, the draws' target weights, in sorted order."""
        return self.sorted - self.prefix[-1]

    def reject_loo(self) -> np.ndarray:
        """1 - a(x_i) at each draw from the other n - 1 draws, sorted order: float64 [n] in [0, 1].

        1 - a(x) = E_q[1 - min(1, r(X')/r(x))] = mean over draws below x of 1 - exp(l_j - l);
        for the i-th smallest that is (i - exp(LSE_{j<i} l_j - l_i)) / (n - 1).
        """
        n = self.sorted.size
        below = np.concatenate([[-np.inf], self.prefix[:-1]])
        ratio_sum = np.exp(below - self.sorted)  # sum_{j<i} exp(l_j - l_i), in [0, i]
        return np.clip((np.arange(n) - ratio_sum) / (n - 1), 0.0, 1.0)

    def reject_at(self, logits: np.ndarray) -> np.ndarray:
        """1 - a(x) at other states (log-odds [m]) from all n draws: float64 [m] in [0, 1]."""
        n = self.sorted.size
        k = np.searchsorted(self.sorted, logits, side="left")  # draws with lower log-odds
        below = np.where(k > 0, self.prefix[np.maximum(k - 1, 0)], -np.inf)
        return np.clip((k - np.exp(below - logits)) / n, 0.0, 1.0)


def _power(one_minus_a: np.ndarray, thin: int) -> np.ndarray:
    if thin == 0:
        return np.ones_like(one_minus_a)
    with np.errstate(divide="ignore"):
        return np.exp(thin * np.log(one_minus_a))


def _weighted_power(log_w: np.ndarray, one_minus_a: np.ndarray, thin: int) -> float:
    with np.errstate(divide="ignore"):
        v = log_w + thin * np.log(one_minus_a)
    top = v.max()
    if top == -np.inf:
        return 0.0
    return float(min(1.0, np.exp(top) * np.sum(np.exp(v - top))))


def acceptance_probabilities(calibrated_generated_logits: np.ndarray) -> np.ndarray:
    """a(x_i) = E_{x'~q}[min(1, r(x')/r(x_i))] at each draw, leave-one-out: float64 [n] in [0, 1].

    calibrated_generated_logits: [n >= 2] calibrated log-odds of generated draws
    (x_i ~ q, the generator) that no chain uses; input order is kept.
    """
    draws = _Draws.of(calibrated_generated_logits)
    out = np.empty(draws.sorted.size)
    out[draws.order] = 1.0 - draws.reject_loo()
    return out


def expected_repeat_share(calibrated_generated_logits: np.ndarray, thin: int) -> float:
    """E_p[(1 - a(X))^T] at the chain's target: the chance that a chain there accepts nothing in T steps.

    That is the expected share of outputs with a predecessor that repeat it, and
    also the expected share of chains restarted from their real start. Estimated
    from generated draws alone: E_p[f] = E_q[f r] / E_q[r] with r = exp(logit).
    Note (1 - E_p[a])^T underestimates it (Jensen): chains stuck at high-odds
    states repeat many times. Returns a float in [0, 1]. Give draws that were
    not used to fit the calibration (see the comment above this function).
    """
    draws = _Draws.of(calibrated_generated_logits)
    return _weighted_power(draws.log_weights(), draws.reject_loo(), _check_thin(thin))


def expected_repeat_share_se(calibrated_generated_logits: np.ndarray, thin: int) -> float:
    """Standard error of :func:`expected_repeat_share` from the draws' sampling, by the delta method.

    The estimate is sum_i w_i g(a_i), g(a) = (1 - a)^T, with self-normalised weights w
    and leave-one-out acceptances a_i that depend on all draws. Its influence
    function has two parts: the weighting, w_k (g_k - share), and the effect of
    draw k on every a_i, (1/n) sum_i w_i g'(a_i) (min(1, r_k/r_i) - a_i). The
    latter is w-weighted prefix and plain suffix sums in logit order (w_i / r_i
    is constant), so the whole is O(n log n) and never overflows.
    SE = sqrt(sum_k influence_k^2); float >= 0. It cannot see odds that no draw
    reaches (the all-real top block above).
    """
    thin = _check_thin(thin)
    draws = _Draws.of(calibrated_generated_logits)
    one_minus_a = draws.reject_loo()
    n = one_minus_a.size
    w = np.exp(draws.log_weights())
    g = _power(one_minus_a, thin)
    g_prime = -thin * _power(one_minus_a, thin - 1)
    share = float(np.sum(w * g))
    wg = w * g_prime
    # Ascending logits: min(1, r_k / r_i) = 1 for i <= k, exp(l_k - l_i) for i > k (ties: 1 either way).
    prefix = np.cumsum(wg)
    suffix = np.concatenate([np.cumsum(g_prime[::-1])[::-1][1:], [0.0]])
    spread = prefix + w * suffix - np.sum(wg * (1.0 - one_minus_a))
    influence = w * (g - share) + spread / n
    return float(np.sqrt(np.sum(influence * influence)))


def mean_acceptance(calibrated_generated_logits: np.ndarray) -> float:
    """E_p[a(X)], the chain's acceptance rate at its target, from generated draws: in [0, 1]."""
    draws = _Draws.of(calibrated_generated_logits)
    return float(np.clip(np.sum(np.exp(draws.log_weights()) * (1.0 - draws.reject_loo())), 0.0, 1.0))


@dataclass(frozen=True)
class RepeatEstimate:
    """Expected repeat share at one T, estimated at the chain's target and at the real samples.

    at_target, at_target_se: :func:`expected_repeat_share` and its standard error.
    at_data, at_data_se: mean over the real held-out samples of (1 - a(x))^T (a from
    the generated draws), and its standard error over the real samples; None without them.
    share: the larger of the two, what :func:`choose_thin` holds to the budget.
    """

    thin: int
    at_target: float
    at_target_se: float
    at_data: float | None = None
    at_data_se: float | None = None

    @property
    def share(self) -> float:
        return self.at_target if self.at_data is None else max(self.at_target, self.at_data)

    def to_json(self) -> dict[str, float | int | None]:
        return {**asdict(self), "share": self.share}


def estimate_repeat_share(
    calibrated_generated_logits: np.ndarray, thin: int, calibrated_real_logits: np.ndarray | None = None
) -> RepeatEstimate:
    """Both estimates of E[(1 - a(X))^T] (see :class:`RepeatEstimate`); real scores are optional.

    calibrated_generated_logits: [n >= 2] generated draws no chain uses (best: not
    used for the calibration fit either); calibrated_real_logits: [m >= 2] the real
    held-out samples chains start from.
    """
    thin = _check_thin(thin)
    draws = _Draws.of(calibrated_generated_logits)
    at_target = _weighted_power(draws.log_weights(), draws.reject_loo(), thin)
    at_target_se = expected_repeat_share_se(calibrated_generated_logits, thin)
    if calibrated_real_logits is None:
        return RepeatEstimate(thin, at_target, at_target_se)
    real = check_scores("calibrated_real_logits", calibrated_real_logits, 2)
    values = _power(draws.reject_at(real), thin)
    return RepeatEstimate(thin, at_target, at_target_se, float(values.mean()),
                          float(values.std(ddof=1) / math.sqrt(values.size)))


def _draws_and_real_rejection(calibrated_generated_logits: np.ndarray,
                              calibrated_real_logits: np.ndarray | None) -> tuple["_Draws", np.ndarray | None]:
    """The generated draws, and the rejection probability at each real start (None without them)."""
    draws = _Draws.of(calibrated_generated_logits)
    if calibrated_real_logits is None:
        return draws, None
    return draws, draws.reject_at(check_scores("calibrated_real_logits", calibrated_real_logits, 2))


def restart_dilution(
    calibrated_generated_logits: np.ndarray,
    thin: int,
    outputs_per_chain: int,
    calibrated_real_logits: np.ndarray | None = None,
) -> float:
    """mean over slots j = 1 .. N-1 of rho(jT): how far below rho(T) the expected repeat share may lie.

    Restarted chains sit at lower odds than stationary ones until those first
    move, so they repeat less (module docstring): the expected share of repeats
    lies in [rho(T) - this, rho(T)], with rho estimated as in
    :class:`RepeatEstimate` (the larger estimate when real scores are given).
    0 for one output per chain. float in [0, 1].
    """
    thin = _check_thin(thin)
    draws, real_reject = _draws_and_real_rejection(calibrated_generated_logits, calibrated_real_logits)
    log_w, reject = draws.log_weights(), draws.reject_loo()
    values = []
    for j in range(1, int(outputs_per_chain)):
        value = _weighted_power(log_w, reject, j * thin)
        if real_reject is not None:
            value = max(value, float(_power(real_reject, j * thin).mean()))
        values.append(value)
    return float(np.mean(values)) if values else 0.0


def choose_thin(
    calibrated_generated_logits: np.ndarray,
    budget: float = DEFAULT_REPEAT_BUDGET,
    max_thin: int = MAX_THIN,
    calibrated_real_logits: np.ndarray | None = None,
) -> tuple[int, float]:
    """The smallest T in [1, max_thin] whose expected repeat share is within ``budget``: (T, that share).

    The share is :func:`expected_repeat_share` of the generated draws, or with
    ``calibrated_real_logits`` the larger of it and the real samples' estimate
    (:class:`RepeatEstimate`). budget: in (0, 1). Both are non-increasing in T, so
    this is a bisection over O(log max_thin) evaluations of O(n + m) after one sort.
    Raises ConfigError when even max_thin exceeds the budget.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.floating)) or not 0.0 < budget < 1.0:
        raise ConfigError(f"the repeat budget must be a number in (0, 1), not {budget!r}.")
    max_thin = _check_thin(max_thin)
    draws, real_reject = _draws_and_real_rejection(calibrated_generated_logits, calibrated_real_logits)
    log_w, reject = draws.log_weights(), draws.reject_loo()

    def share(t: int) -> float:
        value = _weighted_power(log_w, reject, t)
        if real_reject is not None:
            value = max(value, float(_power(real_reject, t).mean()))
        return value

    if share(max_thin) > budget:
        raise ConfigError(
            f"no thinning interval up to {max_thin} keeps the expected repeat share within {budget:g} "
            f"(it is {share(max_thin):.3g} there); raise the budget or use the independent chains."
        )
    low, high = 0, max_thin  # share(low) > budget (or low = 0), share(high) <= budget
    while high - low > 1:
        mid = (low + high) // 2
        if share(mid) <= budget:
            high = mid
        else:
            low = mid
    return high, share(high)
