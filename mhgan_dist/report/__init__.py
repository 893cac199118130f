"""The run report: sample-quality metrics, figures and a self-contained HTML page.

    evaluate_runs(["runs/base", "runs/drs", "runs/mh"])  ->  runs/base/report/{report.json, report.html, *.png}

``runs`` reads finished run directories, :mod:`mhgan_dist.quality.scores` turns
samples into the metrics of :mod:`mhgan_dist.quality.metrics`, ``figures`` draws PNGs
with matplotlib's Agg canvas, ``html`` lays out the page, ``build`` ties them together,
``paper`` holds the paper's published tables.
"""

from mhgan_dist.report.build import DEFAULT_MAX_SAMPLES, ReportResult, evaluate_runs, run_labels, run_names
from mhgan_dist.report.runs import RunData, load_run

__all__ = ["DEFAULT_MAX_SAMPLES", "ReportResult", "RunData", "evaluate_runs", "load_run", "run_labels", "run_names"]
