"""Search for the best network under a budget (``lightnets search``).

:func:`search` walks :data:`~lightnets.search.space.SPACE` (the four families and their
knobs), keeps the networks that meet every bound and returns their Pareto front of
predicted ImageNet top-1 against a cost; :mod:`~lightnets.search.proxy` checks the
prediction by training the front on the data at hand.
"""

from .accuracy import AccuracyModel, paper_points, spearman
from .search import Constraints, Evaluated, SearchResult, pareto_front, search
from .space import RESOLUTIONS, SPACE, Candidate, candidates

__all__ = [
    "RESOLUTIONS",
    "SPACE",
    "AccuracyModel",
    "Candidate",
    "Constraints",
    "Evaluated",
    "SearchResult",
    "candidates",
    "paper_points",
    "pareto_front",
    "search",
    "spearman",
]
