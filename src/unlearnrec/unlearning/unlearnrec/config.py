"""Hyper-parameters of UnlearnRec (Chen, Xia, Huang, SIGIR 2025), with YAML round trip.

Defaults follow ``shared/docs/unlearnrec-method.md`` (§3–§5). Where the sources disagree the spec marks a
**[choice]**; both variants are selectable here (``hbar``, ``freeze_mlp``). Everything that is not in the
spec (batch sizes, the checkpoint-selection score, the fine-tuning selection rule, the sequential mode) is
documented where it is defined.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from unlearnrec.config import YamlConfig


class UnlearnRecConfig(YamlConfig):
    """Everything UnlearnRec needs besides the trained backbone and the data."""

    # ------------------------------------------------------------ encoder (§3)
    hbar: Literal["sum", "last"] = "sum"
    """[choice] ``H̄``: ``sum`` = H^0 + ... + H^L (authors' code; H^0 makes H0 a learned per-node offset even
    for nodes the request does not touch), ``last`` = H^L only (zero for untouched nodes)."""
    gamma: float = Field(0.1, ge=0.0)
    """Weight ``γ`` of the withdraw term: ``ΔE0 = −γ E_w^L + H̄``."""
    w_eta_init: float = 0.002
    """Initial value of the per-node withdraw weight ``W_η``."""
    mlp_layers: int = Field(2, ge=0)
    """``K``: layers ``x ↦ LeakyReLU(x W_k + b_k)`` applied to ``ΔE0`` (``W_k = I``, ``b_k = 0`` at init)."""
    leaky_slope: float = Field(0.99, ge=0.0)
    """Negative slope of the MLP's LeakyReLU (0.99; some of the authors' runs used 0.5)."""
    n_layers: int | None = Field(None, ge=1)
    """Propagation depth ``L`` over ``Â_Δ``; ``None`` = the backbone's depth (at least 1, so MF gets 3 from its
    config's ``n_layers``)."""

    # ---------------------------------------------------------- pre-training (§4)
    pretrain_epochs: int = Field(20, ge=0)
    """Passes over the residual edges of the current simulated request."""
    redraw_every: int = Field(5, ge=1)
    """A new simulated request every this many epochs."""
    request_ratio_min: float = Field(0.05, gt=0.0, lt=1.0)
    """Lower end of the simulated request size ``ρ`` (fraction of training edges, drawn uniformly)."""
    request_ratio_max: float = Field(0.2, gt=0.0, lt=1.0)
    """Upper end of ``ρ``."""
    lambda_u: float = Field(0.5, ge=0.0)
    """Weight of ``L_U`` (unlearning: −log σ(−ŷ) over all request edges). Authors' runs: 1.0."""
    lambda_p: float = Field(0.02, ge=0.0)
    """Weight of ``L_P`` (in-batch log-softmax distribution preservation). Authors' runs: 0.005–0.05."""
    lambda_c: float = Field(1e-3, ge=0.0)
    """Weight of ``L_C`` (InfoNCE between ``H^l`` and its edge-dropped counterpart)."""
    tau_p: float = Field(10.0, gt=0.0)
    """Temperature of ``L_P``'s in-batch softmax (authors' runs: 1)."""
    tau_c: float = Field(1.0, gt=0.0)
    """Temperature of ``L_C``."""
    dropout_keep: float = Field(0.95, gt=0.0, le=1.0)
    """``L_C``: probability of keeping a request edge in the dropped ``Â_Δ`` (kept values rescaled by 1/keep)."""
    learning_rate: float = Field(1e-3, gt=0.0)
    """Adam learning rate of the pre-training (H0 and W_η)."""
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(2048, gt=0)
    """BPR triples per pre-training batch. ``L_P`` builds a batch x batch logit matrix and is a sum over the
    batch, so its cost grows with the square of this and its weight with it; 2048 balances that cost against
    the per-batch propagation on a CPU."""
    lp_max_pairs: int | None = Field(2048, ge=2)
    """``L_P`` (pre-training and fine-tuning) uses at most this many of a batch's pairs: its in-batch softmax
    builds a pairs x pairs logit matrix (8192² dominated a fine-tuning epoch on ML-1M, 115 s on one CPU core);
    ``None`` = the whole batch."""
    batches_per_epoch: int | None = Field(None, ge=1)
    """Cap on batches per pre-training epoch (``None``: a full pass over the residual edges)."""
    freeze_mlp: bool = True
    """[choice] Keep the MLP at W = I, b = 0 during pre-training (authors' code); it is trained when fine-tuning."""
    holdout_ratio: float = Field(0.02, gt=0.0, lt=1.0)
    """Size of the held-out simulated request used only for checkpoint selection. Small, like real requests
    (1–5 %): on ML-1M a 10 % held-out request touches every user, the encoder's shift is then global, and the
    selection kept the untrained encoder, while with 2 % it kept the trained one (which also served a real 1 %
    request far better)."""
    holdout_seed: int = 7919
    """Seed of the held-out request, separate from ``seed`` (never the evaluation request)."""
    select_checkpoint: bool = True
    """Restore the best held-out epoch (``False``: keep the last epoch's tables; the held-out scores are still
    logged)."""
    select_every: int = Field(1, ge=1)
    """Evaluate the held-out request every this many epochs (and after the last)."""
    select_forget_weight: float = Field(1.0, ge=0.0)
    """Selection score = valid-recall ratio − this × |auc_excess / auc_excess(original)| (see ``pretrain.py``)."""

    # -------------------------------------------------------------- unlearning (§5)
    finetune_epochs: int = Field(1, ge=0)
    """``k``: fine-tuning epochs after the zero-shot encoder pass (0 = zero-shot only; authors: 1–3)."""
    finetune_lambda_u: float = Field(0.1, ge=0.0)
    """``λ_u'`` (authors: 0.01–0.2)."""
    finetune_lambda_p: float = Field(0.005, ge=0.0)
    """``λ_p'`` (authors: 0–0.01)."""
    finetune_lambda_target: float = Field(1.0, ge=0.0)
    """Weight of the retrain-proxy ``L_U`` (:func:`~.encoder.proxy_unlearning_loss`), which replaces the spec's
    ``L_U`` when the request is fine-tuned towards the proxy (``target`` selection): it pulls the request
    edges' scores, relative to their users' remaining positives, down to the distribution of the same users'
    validation edges and no further."""
    reset_isolated: bool = True
    """Nodes the request leaves without any edge (a deleted user, a deleted item) get a fresh draw from the
    backbone's initialisation instead of the encoder's output: retraining never updates such a node's row
    (apart from items drawn as BPR negatives), so it stays at its random initial value. Not in the paper: its
    encoder only shifts those rows, and on ML-1M (10 deleted users) left their items at a rank percentile of
    0.16 where retraining puts them at 0.51–0.55; with the reset, 0.51."""
    finetune_learning_rate: float = Field(1e-3, gt=0.0)
    """Adam learning rate for E0 and the MLP while fine-tuning."""
    finetune_batch_size: int = Field(8192, gt=0)
    finetune_select: Literal["gap", "target", "auto"] = "auto"
    """Which fine-tuning epoch to keep (epoch 0 = zero-shot is a candidate): ``gap`` = the spec's rule, largest
    mean(non-edges) − mean(request edges); ``target`` = the request edges' rank percentile closest to that of the
    same users' validation edges (the retrain proxy, ``auc_excess`` nearest 0), stopping once it is reached in rank
    or in mean score (``excess ≤ 0``), and fine-tuned with the proxy ``L_U`` (``finetune_lambda_target``);
    ``auto`` = ``target`` when the original model ranks the request edges above the users' validation edges
    (memorised plausible interactions: a retrained model ranks them like unseen true items), else ``gap``
    (edges that rank below real unseen interactions even while trained on, such as the adversarial ones: a
    retrained model puts them lower still). All subject to ``finetune_min_recall_ratio``."""
    finetune_min_recall_ratio: float = Field(0.98, ge=0.0, le=1.0)
    """A fine-tuning epoch (zero-shot included) is eligible only if its validation recall@20 ≥ this × that of the
    original model served on the residual graph (the utility before unlearning)."""
    n_probe: int = Field(20000, ge=100)
    """At most this many request edges and validation edges (each with 4 user-matched random non-edges) enter
    the rank-percentile measurements of the selection probes."""
    sequential_mode: Literal["new", "accumulated"] = "new"
    """Sequential requests: the encoder sees the new request only (``new``) or the union of all requests so far
    (``accumulated``); both act on the already-unlearned model. See ``unlearn.py`` for the measurement."""

    # ---------------------------------------------------------------- runtime
    ks: list[int] = Field(default_factory=lambda: [20])
    """Cut-offs of the validation ranking used for selection (recall@20 is the monitored metric)."""
    seed: int = 0
    device: str = "cpu"

    @model_validator(mode="after")
    def _check_ranges(self) -> UnlearnRecConfig:
        if self.request_ratio_min > self.request_ratio_max:
            raise ValueError("request_ratio_min must not exceed request_ratio_max")
        if 20 not in self.ks:
            raise ValueError("ks must include 20 (recall@20 is the selection metric)")
        return self
