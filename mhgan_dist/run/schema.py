"""The output dataset's schema: what readers of ``samples/*.parquet`` rely on.

Columns (one row per output sample):

====================  ==========================================  =============================
column                type                                        meaning
====================  ==========================================  =============================
sample_id             int64                                       unique, 0 .. num_samples - 1
sample                arrow.fixed_shape_tensor(float32, shape)   the sample, in data coordinates
d_score_raw           float32                                     D's raw logit of the sample
d_score_calibrated    float64, strictly inside (0, 1)             calibrated P(real)
chain_id              int64                                       the chain (proposals [iL, (i+1)L))
accepts               int32                                       accepted moves (see pickers; thinned:
                                                                  those since the previous output)
restarted             bool                                        the MH restart rule fired (its chain)
proposal_index        int64                                       index in the run's proposal sequence
accept_prob           float64 in [0, 1]                           see pickers.PickResult
emit_step             int64                                       chain step after which it was emitted
repeat                bool                                        equals the previous output of its chain
====================  ==========================================  =============================

Independent chains (the paper's mode): L = K, one output per chain,
sample_id = chain_id, emit_step = K - 1 for mh (the picked proposal's step for
drs and base) and repeat is always false. Thinned chains (``--thin T``): L =
N * T, N outputs per chain, sample_id = chain_id * N + slot, emit_step = (slot
+ 1) * T - 1; the last chain's trailing slots beyond num_samples are not kept.

File-level metadata (Parquet key-value, UTF-8 JSON values) under the keys in
:data:`METADATA_KEYS`. pandas and DuckDB see ``sample`` as a flat list of
``prod(shape)`` floats in C order; pyarrow, polars and Ray Data keep its shape.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["sample_schema", "samples_table", "chain_schema", "METADATA_KEYS", "read_metadata"]

METADATA_PREFIX = "mhgan."
METADATA_KEYS = (
    "run_id", "model_fingerprint", "picker", "chain_length", "calibration_id",
    "sample_shape", "value_range", "seed", "format_version", "thin", "outputs_per_chain",
)


# The per-chain columns, shared by chains/ parts and the output rows.
_CHAIN_FIELDS = {
    "sample_id": pa.int64(),
    "chain_id": pa.int64(),
    "proposal_index": pa.int64(),
    "d_score_raw": pa.float32(),
    "d_score_calibrated": pa.float64(),
    "accepts": pa.int32(),
    "restarted": pa.bool_(),
    "accept_prob": pa.float64(),
    "emit_step": pa.int64(),
    "repeat": pa.bool_(),
}
# Column order of samples/ files (the documented contract).
_SAMPLE_COLUMNS = ("sample_id", "sample", "d_score_raw", "d_score_calibrated", "chain_id", "accepts",
                   "restarted", "proposal_index", "accept_prob", "emit_step", "repeat")


def sample_schema(sample_shape: tuple[int, ...], metadata: dict[str, Any] | None = None) -> pa.Schema:
    types = {**_CHAIN_FIELDS,
             "sample": pa.fixed_shape_tensor(pa.float32(), list(sample_shape))}
    fields = [pa.field(name, types[name], nullable=False) for name in _SAMPLE_COLUMNS]
    encoded = None
    if metadata:
        encoded = {f"{METADATA_PREFIX}{k}".encode(): json.dumps(v).encode() for k, v in metadata.items()}
    return pa.schema(fields, metadata=encoded)


def chain_schema() -> pa.Schema:
    """chains/part-*.parquet: every chain's pick, before materialisation."""
    return pa.schema([pa.field(name, type_, nullable=False) for name, type_ in _CHAIN_FIELDS.items()])


def samples_table(chains: pa.Table, samples: np.ndarray, metadata: dict[str, Any]) -> pa.Table:
    """The output rows: ``chains`` (chain_schema) joined with their samples [n, *shape] float32."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.shape[0] != chains.num_rows:
        raise ValueError(f"{samples.shape[0]} samples for {chains.num_rows} chains")
    shape = tuple(samples.shape[1:])
    value_range = [float(samples.min()), float(samples.max())] if samples.size else [None, None]
    schema = sample_schema(shape, {**metadata, "sample_shape": list(shape), "value_range": value_range})
    tensor = pa.ExtensionArray.from_storage(
        schema.field("sample").type,
        pa.FixedSizeListArray.from_arrays(pa.array(samples.reshape(-1)), int(np.prod(shape, dtype=np.int64))),
    )
    columns = {name: chains.column(name) for name in _CHAIN_FIELDS}
    columns["sample"] = tensor
    return pa.table([columns[name] for name in _SAMPLE_COLUMNS], schema=schema)


def read_metadata(schema: pa.Schema) -> dict[str, Any]:
    """The ``mhgan.*`` file metadata of a samples file, decoded."""
    raw = schema.metadata or {}
    out = {}
    for key, value in raw.items():
        key = key.decode()
        if key.startswith(METADATA_PREFIX):
            out[key[len(METADATA_PREFIX):]] = json.loads(value)
    return out
