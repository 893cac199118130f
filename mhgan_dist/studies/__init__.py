"""Studies built on the library: the paper's toy experiments, the calibrator
study, the picker trade-off and the benchmarks. Each ``jobs`` command of the
same name parses flags and calls one function here.
"""
