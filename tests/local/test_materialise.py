"""Materialised samples do not depend on how outputs are split into parts."""

from __future__ import annotations

import numpy as np

from mhgan_dist.models import resolve_model
from mhgan_dist.pipeline.proposals import MATERIALISE_BATCH, ProposalWorker


def test_a_samples_bits_do_not_depend_on_the_call_it_is_made_in(tiny_model):
    worker = ProposalWorker(resolve_model(str(tiny_model)), seed=3, device="cpu")
    n = 3 * MATERIALISE_BATCH + 17
    ids = np.arange(n, dtype=np.int64)
    proposals = np.random.default_rng(0).integers(0, 10**6, size=n)
    whole = worker.generate(proposals, ids)
    for cuts in ([1, 37, 150], [64, 65, 128], [n - 1]):
        pieces = [worker.generate(proposals[a:b], ids[a:b]) for a, b in zip([0, *cuts], [*cuts, n])]
        np.testing.assert_array_equal(np.concatenate(pieces), whole)
    order = np.random.default_rng(1).permutation(n)
    np.testing.assert_array_equal(worker.generate(proposals[order], ids[order]), whole[order])
    # And the default ids are the positions.
    np.testing.assert_array_equal(worker.generate(proposals), whole)
