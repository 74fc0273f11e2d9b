"""Analysis of finished sweeps: load results, Pareto fronts, published baselines, plots, report.

Reads files only; never needs a running Ray cluster. ``kpid_core`` is imported only to count the MACs
of baseline architectures.
"""

from analysis.errors import AnalysisError
from analysis.load import load_results
from analysis.pareto import ParetoInfo, fronts_by, hypervolume, pareto_front

__all__ = ["AnalysisError", "ParetoInfo", "fronts_by", "hypervolume", "load_results", "pareto_front"]
