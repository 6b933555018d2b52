"""Evaluation layer: full-ranking top-K metrics and forgetting measures."""

from unlearnrec.evaluation.forgetting import (
    final_embeddings,
    forgetting_report,
    item_ranks,
    pair_scores,
    random_non_edges,
    report_jsonable,
    score_stats,
)
from unlearnrec.evaluation.ranking import RankingResult, evaluate_ranking, evaluate_scores

__all__ = [
    "RankingResult",
    "evaluate_ranking",
    "evaluate_scores",
    "final_embeddings",
    "forgetting_report",
    "item_ranks",
    "pair_scores",
    "random_non_edges",
    "report_jsonable",
    "score_stats",
]
