"""The chain stage: read a part's scores, run the picker, write ``chains/``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mhgan_dist.core import calibrators
from mhgan_dist.run import schema
from mhgan_dist.core import pickers
from mhgan_dist.core import streams
from mhgan_dist.core import thinning
from mhgan_dist.run.faults import FaultPlan
from mhgan_dist.run.store import FileRecord, RunStore, part_path, shard_path
from mhgan_dist.core.streams import Stream

__all__ = ["ChainLayout", "ProposalLayout", "ChainRun", "read_scores", "pick_part", "pick_chains"]


@dataclass(frozen=True)
class ChainLayout:
    """How a run's chains map onto proposals, outputs and files.

    Chain i uses proposals [i L, (i+1) L) and emits ``outputs_per_chain`` (N)
    outputs, sample ids [i N, (i+1) N) of which those below ``num_samples`` are
    kept. Independent chains: L = K, N = 1, thin None. Thinned: L = N T.
    Part p holds chains [p S, (p+1) S), S = ``shard_chains``, and its proposals
    are shard p.
    """

    num_samples: int
    chain_proposals: int
    outputs_per_chain: int
    shard_chains: int
    thin: int | None = None

    @staticmethod
    def independent(num_samples: int, chain_length: int, shard_chains: int) -> "ChainLayout":
        return ChainLayout(num_samples, chain_length, 1, shard_chains)

    @staticmethod
    def thinned(plan: thinning.ChainPlan, shard_chains: int) -> "ChainLayout":
        return ChainLayout(plan.num_samples, plan.chain_length, plan.outputs_per_chain, shard_chains, plan.thin)

    @property
    def num_chains(self) -> int:
        return -(-self.num_samples // self.outputs_per_chain)

    @property
    def num_proposals(self) -> int:
        return self.num_chains * self.chain_proposals

    @property
    def steps_per_output(self) -> int:
        """Chain steps behind one output: K, or T."""
        return self.chain_proposals if self.thin is None else self.thin

    def parts(self) -> list[tuple[int, int]]:
        """[chain_start, chain_stop) of each part, in part order."""
        n, s = self.num_chains, self.shard_chains
        return [(c, min(n, c + s)) for c in range(0, n, s)]

    def outputs_of(self, chain_start: int, chain_stop: int) -> int:
        """Kept outputs of chains [chain_start, chain_stop)."""
        n = self.outputs_per_chain
        return min(self.num_samples, chain_stop * n) - chain_start * n

    def to_json(self) -> dict[str, int | None]:
        return {"num_samples": self.num_samples, "chain_proposals": self.chain_proposals,
                "outputs_per_chain": self.outputs_per_chain, "shard_chains": self.shard_chains,
                "thin": self.thin, "num_chains": self.num_chains, "num_proposals": self.num_proposals}


@dataclass(frozen=True)
class ProposalLayout:
    """Where a run's proposal scores live: shards of ``shard_proposals`` rows each."""

    store: RunStore
    shard_proposals: int
    num_proposals: int

    def shards_for(self, start: int, stop: int) -> range:
        return range(start // self.shard_proposals, (stop - 1) // self.shard_proposals + 1)


def read_scores(layout: ProposalLayout, start: int, stop: int) -> np.ndarray:
    """Raw logits of proposals [start, stop), read from the score column only: float32."""
    if not 0 <= start < stop <= layout.num_proposals:
        raise ValueError(f"proposals [{start}, {stop}) are outside the run's {layout.num_proposals}")
    parts = []
    for shard in layout.shards_for(start, stop):
        first = shard * layout.shard_proposals
        column = layout.store.read_table(shard_path(shard), columns=["d_score_raw"]).column(0)
        scores = column.to_numpy()
        parts.append(scores[max(start, first) - first : min(stop, first + scores.size) - first])
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if out.size != stop - start:
        raise ValueError(f"proposal shards hold {out.size} of the {stop - start} scores of [{start}, {stop})")
    return out


@dataclass(frozen=True, eq=False)
class ChainRun:
    """What every chain part of a run shares; a proposal actor receives it once, after calibration.

    Chains have ``chain_length`` (L) proposals each. thin: None for independent
    chains (one output each), else T: each chain emits L // T outputs, sample
    ids chain * (L // T) + slot, of which those below ``num_samples`` are kept.
    calibrator: the fitted calibrator's JSON (see ``calibrator_of``);
    real_raw: raw logits of the run's held-out real samples, float32 [R] (the
    chains' starts); pilot_max_raw: the raw maximum over the DRS pilot draws
    (drs only); odds_power, odds_cap_logit: the chains' tempering and clipping
    (mhgan_dist.core.pickers).
    """

    picker: str
    seed: int
    chain_length: int
    proposals: ProposalLayout
    calibrator: dict[str, Any]
    real_raw: np.ndarray
    pilot_max_raw: float | None = None
    drs_gamma_percentile: float = pickers.DRS_GAMMA_PERCENTILE
    thin: int | None = None
    num_samples: int | None = None
    odds_power: float = 1.0
    odds_cap_logit: float | None = None

    def calibrator_of(self) -> calibrators.Calibrator:
        """The calibrator, rebuilt from its JSON (once per actor: pass it to every ``pick_part``)."""
        return calibrators.calibrator_from_json(self.calibrator)


def pick_part(
    run: ChainRun,
    calibrator: calibrators.Calibrator,
    index: int,
    chain_start: int,
    chain_stop: int,
    target: RunStore,
    faults: FaultPlan = FaultPlan(),
) -> tuple[FileRecord, pa.Table]:
    """Runs the picker over part ``index``, chains [chain_start, chain_stop), and writes ``chains/part-INDEX.parquet``.

    calibrator: ``run.calibrator_of()``. Chain i uses proposals [iL, (i+1)L)
    and starts at the calibrated score of real sample
    ``streams.chain_integers(seed, REAL_INIT, ...)[i]``; all of its randomness
    is keyed by (seed, i). Returns the file's record and its rows.
    """
    faults.maybe_fail("chains", index)
    k, c0, c1, seed = run.chain_length, chain_start, chain_stop, run.seed
    raw = read_scores(run.proposals, c0 * k, c1 * k).reshape(c1 - c0, k)
    logits = calibrator.predict_logit(raw.reshape(-1)).reshape(raw.shape)

    if run.thin is not None:
        table = _thinned_part(run, c0, c1, raw, logits, calibrator)
        return target.write_table(part_path("chains", index), table), table
    result = pick_chains(run.picker, logits, calibrator, run.real_raw, seed, c0, pilot_max_raw=run.pilot_max_raw,
                         drs_gamma_percentile=run.drs_gamma_percentile, odds_power=run.odds_power,
                         odds_cap_logit=run.odds_cap_logit)

    rows = np.arange(c1 - c0)
    chain_ids = np.arange(c0, c1, dtype=np.int64)
    # mh emits its state after the last step; drs and base emit the proposal they pick.
    emit_step = np.full(c1 - c0, k - 1, dtype=np.int64) if run.picker == "mh" else result.picked.astype(np.int64)
    table = _chain_table(
        sample_id=chain_ids, chain_id=chain_ids, picked=result.picked, raw=raw[rows, result.picked],
        logit=logits[rows, result.picked], chain_length=k, accepts=result.accepts, restarted=result.restarted,
        accept_prob=result.accept_prob, emit_step=emit_step, repeat=np.zeros(c1 - c0, dtype=bool),
    )
    return target.write_table(part_path("chains", index), table), table


def pick_chains(
    picker: str,
    logits: np.ndarray,
    calibrator: calibrators.Calibrator,
    real_raw: np.ndarray,
    seed: int,
    chain_start: int,
    *,
    pilot_max_raw: float | None = None,
    drs_gamma_percentile: float = pickers.DRS_GAMMA_PERCENTILE,
    odds_power: float = 1.0,
    odds_cap_logit: float | None = None,
) -> pickers.PickResult:
    """The independent chains' picker over chains [chain_start, chain_start + C) with the run's keyed streams.

    logits: [C, K] calibrated log-odds of each chain's proposals; real_raw: the
    run's raw scores of its held-out real samples (MH's starts, float32 [R]);
    pilot_max_raw: the raw maximum over the DRS pilot draws (drs only). The
    randomness of chain i is keyed by (seed, i) alone, so any range of chains
    picks as it would within any other split into parts: the pipeline's parts
    and an in-process re-pick of all chains at once (mhgan_dist.pipeline.local_repick)
    both call this.
    """
    chains, k = logits.shape
    c0, c1 = chain_start, chain_start + chains
    if picker == "mh":
        start_rows = streams.chain_integers(seed, Stream.REAL_INIT, c0, c1, real_raw.size)
        initial = calibrator.predict_logit(real_raw[start_rows].astype(np.float64))
        return pickers.mh(
            logits,
            initial,
            streams.chain_exponentials(seed, Stream.MH_STEPS, c0, c1, k),
            lambda rows: streams.chain_exponentials_at(seed, Stream.MH_RESTART, c0 + rows, k - 1),
            odds_power=odds_power, odds_cap_logit=odds_cap_logit,
        )
    if picker == "drs":
        if pilot_max_raw is None:
            raise ValueError("the drs picker needs the pilot draws' maximum raw score")
        pilot_max = float(calibrator.predict_logit(np.array([pilot_max_raw]))[0])
        return pickers.drs(
            logits, pilot_max, streams.chain_uniforms(seed, Stream.DRS_STEPS, c0, c1, k),
            gamma_percentile=drs_gamma_percentile, odds_power=odds_power, odds_cap_logit=odds_cap_logit,
        )
    return pickers.base(logits)


def _thinned_part(run: ChainRun, c0: int, c1: int, raw: np.ndarray, logits: np.ndarray,
                  calibrator: calibrators.Calibrator) -> pa.Table:
    """Long chains [c0, c1) over the part's proposals, every T-th state kept (mhgan_dist.core.thinning)."""
    length, seed, thin, real_raw = run.chain_length, run.seed, run.thin, run.real_raw
    start_rows = streams.chain_integers(seed, Stream.REAL_INIT, c0, c1, real_raw.size)
    initial = calibrator.predict_logit(real_raw[start_rows].astype(np.float64))
    result = thinning.thinned_chains(
        logits,
        initial,
        streams.chain_exponentials(seed, Stream.THIN_STEPS, c0, c1, length),
        thin,
        lambda rows: streams.chain_exponentials_at(seed, Stream.THIN_RESTART, c0 + rows, thin - 1),
        odds_power=run.odds_power, odds_cap_logit=run.odds_cap_logit,
    )
    flat = result.flat()
    per_chain = result.outputs_per_chain
    chain_ids = c0 + flat["chain_row"]
    sample_ids = chain_ids * per_chain + flat["slot"]
    kept = sample_ids < (run.num_samples if run.num_samples is not None else np.iinfo(np.int64).max)
    row, picked = flat["chain_row"][kept], flat["picked"][kept]
    return _chain_table(
        sample_id=sample_ids[kept], chain_id=chain_ids[kept], picked=picked, raw=raw[row, picked],
        logit=logits[row, picked], chain_length=length, accepts=flat["accepts"][kept],
        restarted=flat["restarted"][kept], accept_prob=flat["accept_prob"][kept],
        emit_step=flat["emit_step"][kept], repeat=flat["repeat"][kept],
    )


def _chain_table(*, sample_id, chain_id, picked, raw, logit, chain_length, accepts, restarted, accept_prob,
                 emit_step, repeat) -> pa.Table:
    """Rows of chain_schema, one per output; arrays of equal length."""
    return pa.table(
        {
            "sample_id": pa.array(np.asarray(sample_id, dtype=np.int64)),
            "chain_id": pa.array(np.asarray(chain_id, dtype=np.int64)),
            "proposal_index": pa.array(np.asarray(chain_id, dtype=np.int64) * chain_length + picked),
            "d_score_raw": pa.array(np.asarray(raw, dtype=np.float32)),
            "d_score_calibrated": pa.array(_strictly_inside_unit(calibrators.sigmoid(logit))),
            "accepts": pa.array(np.asarray(accepts).astype(np.int32)),
            "restarted": pa.array(np.asarray(restarted, dtype=bool)),
            "accept_prob": pa.array(np.asarray(accept_prob, dtype=np.float64)),
            "emit_step": pa.array(np.asarray(emit_step, dtype=np.int64)),
            "repeat": pa.array(np.asarray(repeat, dtype=bool)),
        },
        schema=schema.chain_schema(),
    )


def _strictly_inside_unit(p: np.ndarray) -> np.ndarray:
    # Uncalibrated logits beyond about +-37 round to exactly 0 or 1 in float64.
    tiny = np.finfo(np.float64).tiny
    return np.clip(p, tiny, np.nextafter(1.0, 0.0))
