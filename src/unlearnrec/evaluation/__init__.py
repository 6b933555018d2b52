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

from unlearnrec.evaluation.anchored import (
    anchored_report,
    in_floor,
    noise_floor,
    pairwise_floor,
    softmax_js,
    topk_jaccard,
)
from unlearnrec.evaluation.membership import (
    MembershipAuditor,
    auc_score,
    audit,
    held_out_pairs,
    pair_features,
    roc_curve,
    shadow_auditor,
)
from unlearnrec.evaluation.robustness import quantization_report, quantize_dequantize, relearning_curve

__all__ += [
    "MembershipAuditor",
    "anchored_report",
    "auc_score",
    "audit",
    "held_out_pairs",
    "in_floor",
    "noise_floor",
    "pair_features",
    "pairwise_floor",
    "quantization_report",
    "quantize_dequantize",
    "relearning_curve",
    "roc_curve",
    "shadow_auditor",
    "softmax_js",
    "topk_jaccard",
]
