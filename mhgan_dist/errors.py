"""The project's exceptions.

Every error a user can cause is one of these, carrying one sentence that names
the thing at fault. Jobs catch :class:`MhganError`, print its message on stderr
and exit non-zero; anything else is a bug and keeps its traceback.

    MhganError (ValueError)
    +-- ConfigError        a flag, config file or option value is wrong
    +-- InputError         a user file (real samples, calibration) is missing or malformed
    +-- ModelError         a generator/discriminator file is missing, unreadable or inconsistent
    +-- OutputError        the output location is unusable or holds an incompatible run
    +-- StageError         a pipeline stage kept failing after its retries
        +-- NonFiniteScoresError  the discriminator gave NaN or an infinity (the run stops)
"""

from __future__ import annotations

__all__ = [
    "MhganError",
    "ConfigError",
    "InputError",
    "ModelError",
    "OutputError",
    "StageError",
    "NonFiniteScoresError",
    "first_line",
]


class MhganError(ValueError):
    """Base of every user-facing error; its message is one sentence."""


class ConfigError(MhganError):
    """A flag, configuration file or option value is invalid."""


class InputError(MhganError):
    """A user-supplied data file is missing, unreadable or of the wrong shape."""


class ModelError(MhganError):
    """A generator or discriminator file is missing, unreadable or inconsistent."""


class OutputError(MhganError):
    """The output location cannot be used, or holds a run of another config."""


class StageError(MhganError):
    """A pipeline stage failed repeatedly; the message names the shard and the cause."""


class NonFiniteScoresError(StageError):
    """The discriminator gave NaN or +-inf on some draws; the run stops rather than use them.

    ``details`` is what the manifest records under ``nonfinite_scores``: at least
    ``count``, ``nan``, ``posinf``, ``neginf`` (ints) and ``where`` (str).
    """

    def __init__(self, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.details = dict(details or {})

    def __reduce__(self):  # keeps ``details`` across Ray's pickling
        return (type(self), (str(self), self.details))


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The most telling line of an exception's text, at most ``limit`` characters.

    The last line that names an error or exception (remote tracebacks end with
    the error itself), else the first non-empty line, else the exception's type.
    """
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in reversed(text):
        if "Error" in line or "error" in line or "Exception" in line:
            return line[:limit]
    return text[0][:limit] if text else type(exc).__name__
