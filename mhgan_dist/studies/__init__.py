"""Studies built on the library, each the body of a ``jobs`` command that parses flags and calls it.

:mod:`.experiments` (``jobs.reproduce``: :mod:`.paper`, the paper's toy experiments and the
chain-length study; :mod:`.calibrator`, the calibrator study; :mod:`.classifiers`, training the
scoring networks), :mod:`.tradeoff` (``jobs.tradeoff``) and :mod:`.benchmark` (``jobs.benchmark``);
:mod:`.runs` holds the pipeline runs a study makes or reuses.
"""
