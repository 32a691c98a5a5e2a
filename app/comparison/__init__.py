"""Batch vs event-driven fraud detection: a batch baseline and the report that compares it with eddy.

``python -m app.comparison --out docs/comparison`` writes the report.
"""

from app.comparison.batch import BatchFraudBaseline, BatchJob
from app.comparison.report import Comparison, Summary, run_comparison, summarize, write_report

__all__ = [
    "BatchFraudBaseline",
    "BatchJob",
    "Comparison",
    "Summary",
    "run_comparison",
    "summarize",
    "write_report",
]
