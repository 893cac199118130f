"""The proposal worker: G and D resident on one device, scoring and materialising.

:class:`ProposalWorker` is a plain class; the driver runs it inside a Ray actor
(:class:`~mhgan_dist.pipeline.actor.ProposalActor`, resources from config). Its methods map index ranges to files or arrays and
never send samples through the object store unless asked for them.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from mhgan_dist.run import schema
from mhgan_dist.core import streams
from mhgan_dist.core.calibrators import Calibrator, sigmoid
from mhgan_dist.errors import NonFiniteScoresError
from mhgan_dist.run.faults import FaultPlan
from mhgan_dist.models import ModelFiles, load_pair, load_real_samples
from mhgan_dist.pipeline.chains import ChainRun, pick_part as pick_chain_part
from mhgan_dist.pipeline.devices import (
    GPU_MAX_BATCH_PROPOSALS,
    autocast_dtype,
    batch_size_for_memory,
    choose_precision,
    configure_threads,
    default_batch_size,
    select_device,
)
from mhgan_dist.pipeline.reports import ChainsResult, SamplesResult, StageResult, WorkerInfo, part_stats, peak_rss_bytes
from mhgan_dist.run.store import RunStore, part_path, shard_path
from mhgan_dist.core.streams import Stream

__all__ = ["ProposalWorker"]


# Rows of every G pass that materialises outputs (see ProposalWorker.generate).
MATERIALISE_BATCH = 64
# Proposals in the forward pass whose peak memory sizes a GPU batch.
GPU_PROBE_BATCH = 1024
# Bound on one batch's samples on the host when shards keep them (bytes).
HOST_BATCH_BYTES = 1 << 30


class ProposalWorker:
    """Holds G and D on its device; scores proposals and rebuilds picked samples.

    seed: the run seed; every latent is ``streams.latents(seed, stream, ...)``.
    batch_size: proposals per forward pass; batches are aligned to multiples of
    it in proposal-index space, so a proposal's score does not depend on how
    the sequence is cut into shards.
    """

    def __init__(
        self,
        model: ModelFiles,
        *,
        seed: int,
        device: str = "auto",
        precision: str = "auto",
        compile_models: bool = False,
        torch_threads: int | None = None,
        cpus: float = 1.0,
        granted_gpu_ids: tuple = (),
        faults: FaultPlan = FaultPlan(),
        gpu_share: float = 1.0,
    ) -> None:
        self.threads = configure_threads(torch_threads, cpus)
        self.device = select_device(device, granted_gpu_ids, torch.cuda.is_available())
        self.pair = load_pair(model, self.device)
        self.model = model
        self.seed = seed
        self.faults = faults
        self.batch_size = default_batch_size(self.device, int(np.prod(self.pair.sample_shape)))
        if len(self.pair.sample_shape) == 3:
            # Convolutions on NHWC run on tensor cores without layout transposes, and on
            # CPU oneDNN's NHWC kernels run DCGAN-sized models about 1.2x faster (BENCHMARKS.md).
            self.pair.generator.to(memory_format=torch.channels_last)
            self.pair.discriminator.to(memory_format=torch.channels_last)
        if compile_models:
            self.pair.generator = torch.compile(self.pair.generator, dynamic=False)
            self.pair.discriminator = torch.compile(self.pair.discriminator, dynamic=False)
        self.precision = "fp32"
        self.precision = choose_precision(precision, self.device, self._disagreement)
        if self.device.type == "cuda":
            self.batch_size = self._batch_filling_device(gpu_share)

    def _batch_filling_device(self, gpu_share: float) -> int:
        """The CUDA batch size: the largest power of two whose G+D peak memory,
        scaled from a GPU_PROBE_BATCH forward pass in the chosen precision, fits
        in half the memory available to this actor (``batch_size_for_memory``):
        the memory free to it, and at most its share (Ray's fractional GPU,
        in (0, 1]) of the card, since actors sharing a card probe it at once."""
        device = self.device
        z = streams.latents(self.seed, Stream.CALIBRATION, 0, GPU_PROBE_BATCH, self.pair.latent_dim)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
        self._forward(z, False)
        torch.cuda.synchronize(device)
        per_proposal = max(1, torch.cuda.max_memory_allocated(device) - resident) / GPU_PROBE_BATCH
        free, total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        available = min(free + cached, int(total * gpu_share))
        host_bound = HOST_BATCH_BYTES // (4 * int(np.prod(self.pair.sample_shape)))
        return batch_size_for_memory(available, per_proposal, minimum=min(GPU_PROBE_BATCH, self.batch_size),
                                     maximum=max(1, min(GPU_MAX_BATCH_PROPOSALS, host_bound)))

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            device=self.device.type,
            latent_dim=self.pair.latent_dim,
            sample_shape=tuple(self.pair.sample_shape),
            fingerprint=self.pair.fingerprint,
            threads=self.threads,
            pid=os.getpid(),
            precision=self.precision,
            batch_size=self.batch_size,
        )

    def configure(self, batch_size: int, precision: str) -> None:
        """Adopts the run's recorded batch size and precision (resumes and re-picks)."""
        self.batch_size = int(batch_size)
        self.precision = precision

    # ---------------------------------------------------------------- scoring

    @torch.inference_mode()
    def _launch(self, latents: np.ndarray, precision: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Queues G then D on one batch, in one call: (logits [B], samples) on the device.

        On CUDA this returns once the kernels are queued; ``_collect`` waits for them.
        """
        dtype = autocast_dtype(precision or self.precision)
        z = torch.from_numpy(latents).to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            x = self.pair.generator(z)
            logits = self.pair.discriminator(x)
        return logits, x

    @staticmethod
    def _collect(launched: tuple[torch.Tensor, torch.Tensor], keep_samples: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Host copies of a launched batch: raw logits [B] float32 (and samples float32)."""
        logits, x = launched
        samples = x.float().cpu().numpy() if keep_samples else None
        return logits.float().cpu().numpy(), samples

    def _forward(
        self, latents: np.ndarray, keep_samples: bool, precision: str | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """G then D on one batch: raw logits [B] float32 (and samples)."""
        return self._collect(self._launch(latents, precision), keep_samples)

    def _disagreement(self, precision: str) -> float:
        """Largest |sigmoid(l_precision) - sigmoid(l_fp32)| over 1024 calibration-stream draws."""
        z = streams.latents(self.seed, Stream.CALIBRATION, 0, 1024, self.pair.latent_dim)
        reduced, _ = self._forward(z, False, precision)
        exact, _ = self._forward(z, False, "fp32")
        gap = np.abs(sigmoid(reduced) - sigmoid(exact))
        return float(np.nanmax(gap)) if np.isfinite(gap).all() else float("inf")

    def _score_range(
        self, stream: Stream, start: int, stop: int, keep_samples: bool = False, fault_index: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw logits (and optionally samples) of rows [start, stop) of a latent stream."""
        scores = np.empty(stop - start, dtype=np.float32)
        samples = (
            np.empty((stop - start, *self.pair.sample_shape), dtype=np.float32) if keep_samples else None
        )
        b = self.batch_size
        halfway = start + (stop - start) // 2

        def store(rows: tuple[int, int], launched) -> None:
            logits, x = self._collect(launched, keep_samples)
            scores[rows[0] - start : rows[1] - start] = logits
            if samples is not None:
                samples[rows[0] - start : rows[1] - start] = x
            if fault_index is not None and rows[0] <= halfway < rows[1]:
                self.faults.maybe_fail("shard", fault_index)

        # One batch in flight: the host makes batch i+1's latents and queues it
        # before waiting for batch i, so a GPU never idles on the host's work.
        pending = None
        position = start
        while position < stop:
            batch_stop = min(stop, (position // b + 1) * b)
            z = streams.latents(self.seed, stream, position, batch_stop, self.pair.latent_dim)
            launched = ((position, batch_stop), self._launch(z))
            if pending is not None:
                store(*pending)
            pending = launched
            position = batch_stop
        if pending is not None:
            store(*pending)
        return scores, samples

    def score_stream(self, stream: int, start: int, stop: int) -> np.ndarray:
        """Raw logits of generated draws [start, stop) of a stream (calibration, DRS pilot): float32."""
        if Stream(stream) == Stream.CALIBRATION:
            self.faults.maybe_fail("calibration", start)
        scores, _ = self._score_range(Stream(stream), start, stop)
        self._require_finite(scores, f"{Stream(stream).name.lower()} draws [{start}, {stop})")
        return scores

    @torch.inference_mode()
    def score_real(self, start: int, stop: int) -> np.ndarray:
        """Raw logits of held-out real samples [start, stop) of the model's real file: float32."""
        real = load_real_samples(self.model.real, self.pair.sample_shape)[start:stop]
        out = np.empty(real.shape[0], dtype=np.float32)
        dtype = autocast_dtype(self.precision)
        for a in range(0, real.shape[0], self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(real[a : a + self.batch_size])).to(self.device)
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out[a : a + x.shape[0]] = self.pair.discriminator(x).float().cpu().numpy()
        self._require_finite(out, f"real samples [{start}, {stop}) of {self.model.real}")
        return out

    def write_shard(self, store: RunStore, index: int, start: int, stop: int, keep_samples: bool) -> StageResult:
        """Scores proposals [start, stop) and writes ``proposals/shard-INDEX.parquet``.

        Columns: ``d_score_raw`` float32 (row r = proposal start + r), and with
        ``keep_samples`` the ``sample`` tensor. Raises NonFiniteScoresError, and
        writes nothing, when any score is NaN or infinite.
        """
        began = time.time()
        scores, samples = self._score_range(Stream.PROPOSALS, start, stop, keep_samples, fault_index=index)
        self._require_finite(scores, f"proposal shard {index} (proposals [{start}, {stop}))",
                             shard=index, proposals=[start, stop])
        columns = {"d_score_raw": pa.array(scores)}
        if samples is not None:
            shape = list(samples.shape[1:])
            columns["sample"] = pa.ExtensionArray.from_storage(
                pa.fixed_shape_tensor(pa.float32(), shape),
                pa.FixedSizeListArray.from_arrays(pa.array(samples.reshape(-1)), int(np.prod(shape))),
            )
        table = pa.table(columns).replace_schema_metadata(
            {b"mhgan.first_proposal": str(start).encode(), b"mhgan.seed": str(self.seed).encode()}
        )
        # Scores of independent draws neither compress nor repeat: plain, uncompressed
        # float32 is 4 bytes a proposal (a dictionary attempt would add about 2).
        record = store.write_table(shard_path(index), table, compression="none" if samples is None else "zstd",
                                   use_dictionary=False)
        return StageResult(record, began, time.time())

    def time_batches(self, num_batches: int) -> tuple[int, float]:
        """(proposals, seconds) of G+D on ``num_batches`` full batches after one warm-up batch.

        Uses calibration-stream latents and writes nothing (for ``--dry-run``).
        """
        b = self.batch_size
        self._score_range(Stream.CALIBRATION, 0, b)
        began = time.perf_counter()
        self._score_range(Stream.CALIBRATION, 0, num_batches * b)
        return num_batches * b, time.perf_counter() - began

    # -------------------------------------------------------- materialisation

    @torch.inference_mode()
    def generate(self, proposal_indices: np.ndarray, sample_ids: np.ndarray | None = None) -> np.ndarray:
        """Samples of the given proposals, rebuilt from their latents: float32 [n, *sample_shape].

        ``sample_ids`` (int, unique; default 0 .. n-1) are the outputs' ids. G
        makes each sample in a batch of MATERIALISE_BATCH rows, at row
        ``sample_id % MATERIALISE_BATCH``, beside the other samples of its block
        that this call makes and zeros elsewhere: CPU and GPU kernels may round
        a row differently with the batch's size or the row's place in it, and
        fixing both keeps a sample's bits the same however outputs are split
        into parts (a re-pick equals a fresh run with another part layout).
        """
        n = len(proposal_indices)
        ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
        z = streams.latents_at(self.seed, Stream.PROPOSALS, proposal_indices, self.pair.latent_dim)
        out = np.empty((n, *self.pair.sample_shape), dtype=np.float32)
        dtype = autocast_dtype(self.precision)
        order = np.argsort(ids // MATERIALISE_BATCH, kind="stable")
        blocks = ids[order] // MATERIALISE_BATCH
        for rows in np.split(order, np.flatnonzero(np.diff(blocks)) + 1):
            if rows.size == 0:
                continue
            slots = ids[rows] % MATERIALISE_BATCH
            batch = np.zeros((MATERIALISE_BATCH, self.pair.latent_dim), dtype=np.float32)
            batch[slots] = z[rows]
            zz = torch.from_numpy(batch).to(self.device)
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                made = self.pair.generator(zz).float().cpu().numpy()
            out[rows] = made[slots]
        return out

    def write_samples(self, store: RunStore, index: int, chain_start: int, chain_stop: int,
                      metadata: dict[str, Any]) -> SamplesResult:
        """Materialises part ``index`` (chains [chain_start, chain_stop)) from its ``chains/part-INDEX.parquet``
        in ``store`` and writes ``samples/part-INDEX.parquet`` with ``metadata``; returns its record and the
        statistics of its rows."""
        began = time.time()
        self.faults.maybe_fail("materialise", index)
        chains = store.read_table(part_path("chains", index))
        samples = self.generate(chains.column("proposal_index").to_numpy(), chains.column("sample_id").to_numpy())
        record = store.write_table(part_path("samples", index), schema.samples_table(chains, samples, metadata))
        return SamplesResult(record, began, time.time(), part_stats(chains, chain_start, chain_stop))

    def pick_part(self, run: ChainRun, calibrator: Calibrator, index: int, chain_start: int, chain_stop: int,
                  store: RunStore) -> ChainsResult:
        """:func:`~mhgan_dist.pipeline.chains.pick_part` into ``store``, with its seconds and this process's peak
        resident bytes. Numpy work of a few milliseconds per part: the actor runs it in a thread of its own
        beside G and D, in a process that is already warm."""
        began = time.perf_counter()
        record, _ = pick_chain_part(run, calibrator, index, chain_start, chain_stop, store, self.faults)
        return ChainsResult(record, time.perf_counter() - began, peak_rss_bytes())

    def peak_rss(self) -> int:
        return peak_rss_bytes()

    def _require_finite(self, scores: np.ndarray, where: str, **details) -> None:
        """The policy for NaN and +-inf logits: the run stops, counting them (never clipped).

        A ``probability`` D's exact 0 or 1 is no such score: the loader clamps it
        to a finite logit (about +-36.8) before it gets here.
        """
        nan, posinf, neginf = (int(f(scores).sum()) for f in (np.isnan, np.isposinf, np.isneginf))
        count = nan + posinf + neginf
        if count:
            raise NonFiniteScoresError(
                f"the discriminator {self.model.discriminator} gave {count} non-finite score(s) "
                f"({nan} NaN, {posinf + neginf} infinite) on {where}; the run stops rather than feed them "
                "to the chains (counted in manifest.json under nonfinite_scores)",
                {"count": count, "nan": nan, "posinf": posinf, "neginf": neginf, "where": where,
                 "discriminator": str(self.model.discriminator), **details},
            )

