"""Unlearning layer: deletion requests and deletion scenarios (unlearners are added alongside)."""

from unlearnrec.unlearning.requests import DeletionRequest, RequestError
from unlearnrec.unlearning.scenarios import (
    AdversarialScenario,
    ScenarioError,
    adversarial_edges,
    adversarial_scenario,
    attacked_dataset,
)

__all__ = [
    "DeletionRequest",
    "RequestError",
    "AdversarialScenario",
    "ScenarioError",
    "adversarial_edges",
    "adversarial_scenario",
    "attacked_dataset",
]
