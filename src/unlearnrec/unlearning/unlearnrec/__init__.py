"""UnlearnRec (Chen, Xia, Huang, SIGIR 2025): a pre-trained Influence Encoder that unlearns deletion requests.

Spec: ``shared/docs/unlearnrec-method.md``. Pipeline::

    encoder, report = pretrain_encoder(model, graph, data, UnlearnRecConfig())   # one-off cost
    save_encoder("runs/ie", encoder, model, checkpoint.fingerprint, report=report)
    result = unlearn_request(model, graph, encoder, request_edges, data, finetune_epochs=1)
    result.model, result.graph    # the unlearned backbone and the residual graph it serves on
"""

from unlearnrec.unlearning.unlearnrec.config import CalibratedConfig, UnlearnRecConfig, config_for
from unlearnrec.unlearning.unlearnrec.encoder import EncoderOutput, InfluenceEncoder
from unlearnrec.unlearning.unlearnrec.idm import dropped_idm, influence_dependency_matrix, request_edges
from unlearnrec.unlearning.unlearnrec.io import load_encoder, model_fingerprint, read_encoder_meta, save_encoder
from unlearnrec.unlearning.unlearnrec.pretrain import pretrain_encoder, selection_score, simulate_request
from unlearnrec.unlearning.unlearnrec.unlearn import RequestProbe, UnlearnResult, unlearn_request, unlearn_sequence

__all__ = [
    "CalibratedConfig",
    "config_for",
    "EncoderOutput",
    "InfluenceEncoder",
    "RequestProbe",
    "UnlearnRecConfig",
    "UnlearnResult",
    "dropped_idm",
    "influence_dependency_matrix",
    "load_encoder",
    "model_fingerprint",
    "pretrain_encoder",
    "read_encoder_meta",
    "request_edges",
    "save_encoder",
    "selection_score",
    "simulate_request",
    "unlearn_request",
    "unlearn_sequence",
]
