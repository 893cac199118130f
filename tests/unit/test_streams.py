import numpy as np
import pytest

from mhgan_dist.core import streams
from mhgan_dist.core.streams import Stream


@pytest.mark.parametrize("splits", [[0, 5000], [0, 1, 1023, 1024, 1025, 3000, 5000], [0, 2500, 5000]])
def test_latents_do_not_depend_on_batching(splits):
    whole = streams.latents(3, Stream.PROPOSALS, 0, 5000, 4)
    parts = [streams.latents(3, Stream.PROPOSALS, a, b, 4) for a, b in zip(splits[:-1], splits[1:])]
    assert np.array_equal(np.concatenate(parts), whole)
    assert whole.dtype == np.float32 and whole.shape == (5000, 4)


def test_latents_at_matches_ranges_in_any_order():
    whole = streams.latents(9, Stream.PROPOSALS, 0, 4000, 3)
    idx = np.array([3999, 0, 17, 1024, 17, 2047, 2048])
    assert np.array_equal(streams.latents_at(9, Stream.PROPOSALS, idx, 3), whole[idx])


def test_streams_and_seeds_are_independent():
    a = streams.latents(1, Stream.PROPOSALS, 0, 100, 2)
    assert not np.allclose(a, streams.latents(1, Stream.CALIBRATION, 0, 100, 2))
    assert not np.allclose(a, streams.latents(2, Stream.PROPOSALS, 0, 100, 2))
    z = streams.latents(1, Stream.PROPOSALS, 0, 50_000, 2)
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.std() - 1) < 0.02


def test_chain_draws_are_keyed_by_chain():
    whole = streams.chain_exponentials(5, Stream.MH_STEPS, 0, 700, 16)
    part = streams.chain_exponentials(5, Stream.MH_STEPS, 300, 600, 16)
    assert np.array_equal(whole[300:600], part)
    assert (whole >= 0).all()
    u = streams.chain_uniforms(5, Stream.DRS_STEPS, 0, 700, 16)
    assert np.array_equal(u[10:20], streams.chain_uniforms(5, Stream.DRS_STEPS, 10, 20, 16))
    assert ((u >= 0) & (u < 1)).all()
    ints = streams.chain_integers(5, Stream.REAL_INIT, 0, 700, 7)
    assert np.array_equal(ints[256:300], streams.chain_integers(5, Stream.REAL_INIT, 256, 300, 7))
    assert ints.min() >= 0 and ints.max() < 7


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="seed"):
        streams.latents(-1, Stream.PROPOSALS, 0, 3, 2)
    with pytest.raises(ValueError, match="row range"):
        streams.latents(0, Stream.PROPOSALS, 5, 3, 2)
    with pytest.raises(ValueError, match="latent_dim"):
        streams.latents(0, Stream.PROPOSALS, 0, 3, 0)
    assert streams.chain_exponentials(0, Stream.MH_STEPS, 4, 4, 8).shape == (0, 8)


def test_chain_exponentials_at_matches_ranges():
    whole = streams.chain_exponentials(8, Stream.MH_RESTART, 0, 900, 5)
    ids = np.array([899, 3, 256, 3, 511])
    assert np.array_equal(streams.chain_exponentials_at(8, Stream.MH_RESTART, ids, 5), whole[ids])
