"""One finished run directory, read for the report: samples, chain statistics, calibration data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mhgan_dist.errors import InputError, MhganError
from mhgan_dist.run.record import RecordedRun, read_run

__all__ = ["RunData", "load_run", "load_real", "dataset_name"]

SCORES_PATH = "calibration/scores.parquet"
CALIBRATION_REPORT_PATH = "calibration/report.json"


@dataclass
class RunData:
    """What the report needs from one run directory.

    samples: float32 [n, *sample_shape], the first n rows by sample_id (n <= max_samples).
    d_score_raw, d_score_calibrated, accepts, restarted: [n] columns of the same rows.
    calibration_labels, calibration_raw: [m] held-out calibration set (1 = real, raw D logits).
    root: the run folder on its filesystem (an absolute local path, or bucket/prefix of an object store).
    name: what the report calls the run: the user's, else the folder's (see build.run_names).
    """

    uri: str
    record: RecordedRun
    samples: np.ndarray
    d_score_raw: np.ndarray
    d_score_calibrated: np.ndarray
    accepts: np.ndarray
    restarted: np.ndarray
    total_samples: int
    calibration_labels: np.ndarray
    calibration_raw: np.ndarray
    calibration_report: dict[str, Any]
    root: str = ""
    name: str = ""
    label: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.record.config

    @property
    def run_id(self) -> str:
        return self.record.identity.run_id

    @property
    def model_fingerprint(self) -> str:
        return self.record.identity.model_fingerprint

    @property
    def sampling(self) -> dict[str, Any]:
        return self.config.get("sampling", {})

    @property
    def picker(self) -> str:
        return str(self.sampling.get("picker", "?"))

    @property
    def chain_length(self) -> int:
        return int(self.sampling.get("chain_length", 0))

    @property
    def thin(self) -> int | None:
        """T of a thinned run (long chains emitting every T-th state); None for independent chains."""
        layout = self.record.layout
        return None if layout is None or layout.thin is None else int(layout.thin)

    @property
    def steps_per_output(self) -> int:
        """Chain steps behind one output: K, or T when thinned."""
        return self.chain_length if self.thin is None else self.thin

    @property
    def calibration_method(self) -> str:
        return str(self.calibration_report.get("diagnostics", {}).get("method", self.sampling.get("calibration", "?")))

    @property
    def seed(self) -> int:
        return int(self.sampling.get("seed", 0))

    @property
    def stats(self) -> dict[str, Any]:
        return self.record.stats

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.samples.shape[1:])


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def load_run(uri: str, max_samples: int | None = None) -> RunData:
    """Reads a complete run (``_SUCCESS`` present); InputError when it is not one.

    max_samples: keep the first this many samples by sample_id (chains are
    independent, so this is an unbiased subset); None keeps all.
    """
    run = read_run(uri, complete=True)
    store = run.store
    # Skips the temporary files of a write in progress (".tmp-...").
    parts = [p for p in store.list("samples") if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith(".")]
    if not parts:
        raise InputError(f"{store.display} has no samples/*.parquet files")
    table = pa.concat_tables([store.read_table(part) for part in parts])
    total = table.num_rows
    table = table.take(pc.sort_indices(table, [("sample_id", "ascending")]))
    if max_samples is not None and total > max_samples:
        table = table.slice(0, max_samples)
    samples = np.asarray(table.column("sample").combine_chunks().to_numpy_ndarray(), dtype=np.float32)
    if not store.exists(SCORES_PATH) or not store.exists(CALIBRATION_REPORT_PATH):
        raise InputError(f"{store.display} has no calibration/scores.parquet or calibration/report.json")
    scores = store.read_table(SCORES_PATH)
    return RunData(
        uri=uri,
        record=run,
        samples=samples,
        d_score_raw=_column(table, "d_score_raw").astype(np.float64),
        d_score_calibrated=_column(table, "d_score_calibrated").astype(np.float64),
        accepts=_column(table, "accepts").astype(np.int64),
        restarted=_column(table, "restarted").astype(bool),
        total_samples=total,
        calibration_labels=_column(scores, "label").astype(np.int64),
        calibration_raw=_column(scores, "d_score_raw").astype(np.float64),
        calibration_report=store.read_json(CALIBRATION_REPORT_PATH),
        root=store.root,
    )


def _model_files(run: RunData):
    from mhgan_dist.models import resolve_model

    m = run.config.get("model", {})
    generator = m.get("generator")
    return resolve_model(
        None if generator else m.get("model"),
        generator=generator, discriminator=m.get("discriminator"), latent_dim=m.get("latent_dim"),
        real=m.get("real"), discriminator_output=m.get("discriminator_output"),
    )


def dataset_name(run: RunData) -> str | None:
    """The dataset the run's model was trained on (model.json, else a shipped model's name), if known."""
    try:
        files = _model_files(run)
    except MhganError:
        name = run.config.get("model", {}).get("model")
        return name if isinstance(name, str) else None
    return files.metadata.get("dataset") or files.name


def load_real(run: RunData, real: str | None = None) -> np.ndarray | None:
    """The held-out real samples of the run's model (or ``real``), float32 [N, *sample_shape].

    None, with a note on the run, when the model's files cannot be reached from here.
    """
    from mhgan_dist.models import load_real_samples

    try:
        path = real if real is not None else _model_files(run).real
        if path is None:
            run.notes.append("the model has no held-out real samples here; real-data figures and metrics are left out")
            return None
        return load_real_samples(path, run.sample_shape)
    except MhganError as exc:
        run.notes.append(f"real samples unavailable ({exc}); real-data figures and metrics are left out")
        return None
