"""Progress for the driver: a bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Reports proposals scored and samples written.

    On a terminal: a tqdm bar with proposals/s. Elsewhere (``ray job logs``, a
    file): one plain line every ``interval_s`` seconds, and one at the end.
    """

    def __init__(self, total_proposals: int, total_samples: int, *, stream: TextIO | None = None,
                 interval_s: float = 10.0, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.total_proposals, self.total_samples = total_proposals, total_samples
        self.proposals = self.samples = 0
        self.started = time.monotonic()
        self.last_line = -math.inf  # the first update prints at once, however young the clock
        self.interval_s = interval_s
        self.enabled = enabled
        self.bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total_proposals, unit="proposal", unit_scale=True, file=self.stream,
                            dynamic_ncols=True, desc="proposals")

    def advance(self, proposals: int = 0, samples: int = 0) -> None:
        self.proposals += proposals
        self.samples += samples
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(proposals)
            self.bar.set_postfix_str(f"samples {self.samples:,}/{self.total_samples:,}", refresh=False)
        elif time.monotonic() - self.last_line >= self.interval_s:
            self.line()

    def line(self) -> None:
        elapsed = max(1e-9, time.monotonic() - self.started)
        print(
            f"progress: {self.proposals:,}/{self.total_proposals:,} proposals "
            f"({self.proposals / elapsed:,.0f}/s), {self.samples:,}/{self.total_samples:,} samples written, "
            f"{elapsed:,.0f} s",
            file=self.stream, flush=True,
        )
        self.last_line = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self.line()
