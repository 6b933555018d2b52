"""Hyper-parameters of UnlearnRec (Chen, Xia, Huang, SIGIR 2025), with YAML round trip.

Two presets, two registered methods:

* :class:`UnlearnRecConfig` (``unlearnrec``): the paper as published (``shared/docs/unlearnrec-method.md``
  §3–§5, with the authors' loss weights λ_u 1, τ_p 1): ``L_U`` towards −∞ in pre-training and fine-tuning,
  a fixed simulated request size ρ = 0.2, a new request every epoch, the gap rule for the fine-tuning epoch,
  no recall floor, no fresh rows for deleted nodes.
* :class:`CalibratedConfig` (``unlearnrec-calibrated``, this library's): the same encoder aimed at where a
  retrained model puts a deletion instead of at −∞ — pre-trained with the retrain-proxy loss on simulated
  requests of real sizes (1-5 %), the epoch selected by closeness to the proxy, fresh rows for deleted
  nodes, and fine-tuning restricted to the request's reach.

Where the sources disagree the spec marks a **[choice]**; both are selectable (``hbar``, ``freeze_mlp``).
Everything that is not in the spec is documented where it is defined.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_serializer, model_validator

from unlearnrec.config import YamlConfig


class UnlearnRecConfig(YamlConfig):
    """Everything UnlearnRec needs besides the trained backbone and the data (defaults: the paper)."""

    variant: Literal["paper", "calibrated"] = "paper"
    """Which preset these hyper-parameters started from (recorded with every encoder and result)."""

    # ------------------------------------------------------------ encoder (§3)
    hbar: Literal["sum", "last"] = "sum"
    """[choice] ``H̄``: ``sum`` = H^0 + ... + H^L (authors' code; H^0 makes H0 a learned per-node offset even
    for nodes the request does not touch), ``last`` = H^L only (zero for untouched nodes)."""
    withdraw_center: Literal["none", "mean", "orthogonal"] = "none"
    """Make the withdraw term relative to each node's remaining neighbours (not in the paper; see
    :meth:`~.encoder.InfluenceEncoder.raw_delta`): ``mean`` subtracts their mean embedding from what is
    withdrawn, ``orthogonal`` keeps only the part orthogonal to it, so a node moves away from what the request
    takes from it while its scores with what it keeps stay put (first order); ``none`` = the paper."""
    withdraw_norm: Literal["idm", "degree"] = "idm"
    """How the withdraw term spreads over the request: ``idm`` (the paper: ``L`` hops over ``Â_Δ``, normalised by
    degrees within the request) or ``degree`` (one hop over ``D^{-1} A_Δ`` with the degrees before the request:
    each deleted edge withdraws the same share of its endpoint whatever the request's size; see
    :func:`~.encoder.degree_withdraw`)."""
    withdraw_side: Literal["both", "users", "items"] = "both"
    """Which endpoints of the request edges the withdraw term moves (the paper: both)."""
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
    pretrain_epochs: int = Field(40, ge=0)
    """Pre-training epochs (each at most ``batches_per_epoch`` batches of residual BPR triples)."""
    redraw_every: int = Field(1, ge=1)
    """A new simulated request every this many epochs. The authors redraw every 5 epochs over about 200 passes
    (about 40 requests); on this budget a new request every epoch gives the same number of requests. With 2
    requests (10 epochs, every 5) the encoder did not learn on ML-1M LightGCN (the untrained one was kept)."""
    request_ratio_min: float = Field(0.2, gt=0.0, lt=1.0)
    """Lower end of the simulated request size ``ρ`` (fraction of training edges, drawn uniformly)."""
    request_ratio_max: float = Field(0.2, gt=0.0, lt=1.0)
    """Upper end of ``ρ`` (equal to the lower end: a fixed ``ρ``, as in the paper; spec: 0.05-0.2)."""
    pretrain_loss: Literal["spec", "proxy"] = "spec"
    """The unlearning term of pre-training: ``spec`` = the paper's ``L_U`` (``−log σ(−ŷ)`` over every request
    edge, towards −∞); ``proxy`` = :func:`~.encoder.proxy_unlearning_loss`, the request edges pulled down to
    where a retrained model puts them (estimated from the same users' validation edges) and no further."""
    lambda_u: float = Field(1.0, ge=0.0)
    """Weight of the unlearning term (``L_U`` or the proxy). Authors' runs: 1.0 (spec default 0.5)."""
    lambda_p: float = Field(0.02, ge=0.0)
    """Weight of ``L_P`` (in-batch log-softmax distribution preservation). Authors' runs: 0.005–0.05."""
    lambda_c: float = Field(1e-3, ge=0.0)
    """Weight of ``L_C`` (InfoNCE between ``H^l`` and its edge-dropped counterpart)."""
    tau_p: float = Field(1.0, gt=0.0)
    """Temperature of ``L_P``'s in-batch softmax (authors' runs: 1; spec default 10)."""
    tau_c: float = Field(1.0, gt=0.0)
    """Temperature of ``L_C``."""
    dropout_keep: float = Field(0.95, gt=0.0, le=1.0)
    """``L_C``: probability of keeping a request edge in the dropped ``Â_Δ`` (kept values rescaled by 1/keep)."""
    learning_rate: float = Field(1e-3, gt=0.0)
    """Adam learning rate of the pre-training (H0 and W_η), times ``learning_rate_scale`` of the backbone."""
    learning_rate_scale: dict[str, float] = Field(default_factory=dict)
    """Per-backbone factor on ``learning_rate`` (keyed by the backbone's ``name``; 1 for a backbone not listed),
    for one configuration that pre-trains several backbones (a benchmark grid, the registry test).

    Why: MF has no propagation, so the encoder's ``Ẽ0`` *is* its final embeddings, while a GNN's readout averages
    a layer-0 row with its neighbours'. Adam moves each coordinate by about the rate, so the same rate moves MF's
    scores about 3.5x further per step (measured on the tables of ``test_every_method_forgets.py``: 0.030 vs
    0.0087). At that test's rate 0.01, MF fell under ``select_min_recall_ratio`` before the first measured epoch
    and the untrained encoder was kept; ``{"mf": 0.3}`` was chosen there on 15 tuning requests (none the
    selection's or a tested one). Empty by default (the paper's rate; at 1e-3 the step did not limit MF on
    ML-1M), and left out of the dumped config when empty, so older configurations keep their cache keys."""
    calibrate_gain: bool = False
    """After the epochs, set the withdraw term's global gain ``g`` (``−γ g E_w^L``; 1 = the paper) so that the
    held-out requests' edges, zero-shot, rank where the retrain proxy puts them (mean ``auc_excess`` =
    ``gain_target_excess``), as long as recall keeps ``select_min_recall_ratio``; found by bisection on
    ``log g`` (``gain_search_steps`` zero-shot passes per held-out request). Not in the paper: ``W_η`` starts
    at 0.002 and Adam moves it by about ``learning_rate`` a step, so within a CPU budget the withdraw term
    stays orders of magnitude too weak to move a random request as far as retraining does (ML-1M LightGCN, 1 %
    request: ``g`` about 3,000 is needed)."""
    gain_target_excess: float = 0.0
    """``calibrate_gain``'s target ``auc_excess`` where no retrained model says otherwise (0: the request edges
    rank like the same users' validation edges, the retrain proxy)."""
    calibration_retrains: int = Field(0, ge=0)
    """Retrain the backbone's recipe from scratch on this many held-out requests (the largest first; seeds
    other than the original's) and calibrate to them: on each, the target is the retrained model's own
    ``auc_excess`` and the utility floor ``calibration_min_recall_ratio`` × its recall, instead of the proxy's
    0 and EdgeDrop's recall. A one-off cost (one full training each); the per-request cost does not change.
    On ML-1M LightGCN the retrained model still ranks a deleted random 1 % a little above the users'
    validation edges (``auc_excess`` +0.007 where the original has +0.034), and it gives up some recall itself
    (0.2180 vs EdgeDrop's 0.2205), so the proxy alone asks for slightly too much forgetting at too high a
    utility."""
    calibration_min_recall_ratio: float = Field(0.99, ge=0.0, le=1.0)
    """Utility floor of the gain search on a retrained held-out request, relative to the retrained model's
    validation recall (or EdgeDrop's where that is lower). The calibrated preset uses 0.98, chosen on the
    tuning requests (``unlearnrec_ml1m_lightgcn_tune.yaml``): with 0.99 the floor of the one retrained 5 %
    held-out request stopped the gain at 82 % of the way to the retrained rank on both tuning requests, where
    their test recall was 99.8 % of the retrained model's."""
    gain_search_max: float = Field(1e6, gt=1.0)
    """Upper end of the gain search."""
    gain_search_steps: int = Field(16, ge=1)
    """Bisection steps of the gain search."""
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(2048, gt=0)
    """BPR triples per pre-training batch. ``L_P`` builds a batch x batch logit matrix and is a sum over the
    batch, so its cost grows with the square of this and its weight with it; 2048 balances that cost against
    the per-batch propagation on a CPU."""
    lp_max_pairs: int | None = Field(2048, ge=2)
    """``L_P`` (pre-training and fine-tuning) uses at most this many of a batch's pairs: its in-batch softmax
    builds a pairs x pairs logit matrix (8192² dominated a fine-tuning epoch on ML-1M, 115 s on one CPU core);
    ``None`` = the whole batch."""
    batches_per_epoch: int | None = Field(60, ge=1)
    """Cap on batches per pre-training epoch (``None``: a full pass over the residual edges)."""
    freeze_mlp: bool = True
    """[choice] Keep the MLP at W = I, b = 0 during pre-training (authors' code); it is trained when fine-tuning."""
    holdout_ratios: list[float] = Field(default_factory=lambda: [0.01, 0.05], min_length=1)
    """Sizes of the held-out simulated requests that select the pre-training epoch (one request each, drawn
    with ``holdout_seed``, never the request that will be evaluated): random requests of the sizes real ones
    have (1-5 % of the edges), whatever ``ρ`` the pre-training draws."""
    holdout_seed: int = 7919
    """Seed of the held-out requests, separate from ``seed``."""
    select_rule: Literal["gap", "proxy", "last"] = "gap"
    """How the kept pre-training epoch is chosen on the held-out requests (zero-shot, each epoch, epoch 0 = the
    untrained encoder included). Eligible: held-out validation recall@20 ≥ ``select_min_recall_ratio`` × the
    original's on every held-out request. ``gap`` (the paper's criterion): the largest mean over held-out
    requests of ``mean score(random non-edges) − mean score(request edges)``; ``proxy``: the smallest mean
    ``|auc_excess / auc_excess(original)|`` (0 = the request edges rank like the users' unseen true items, as
    after retraining; 1 = nothing forgotten; > 1 again when pushed far below); ``last``: the last epoch."""
    select_min_recall_ratio: float = Field(0.95, ge=0.0, le=1.0)
    """Utility floor of the pre-training selection (see ``select_rule``)."""
    select_every: int = Field(5, ge=1)
    """Measure the held-out requests every this many epochs (and after the last)."""

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
    reset_isolated: bool = False
    """Nodes the request leaves without any edge (a deleted user, a deleted item) get a fresh draw from the
    backbone's initialisation instead of the encoder's output: retraining never updates such a node's row
    (apart from items drawn as BPR negatives), so it stays at its random initial value. Not in the paper: its
    encoder only shifts those rows, and on ML-1M (10 deleted users) left their items at a rank percentile of
    0.16 where retraining puts them at 0.51–0.55; with the reset, 0.51."""
    finetune_learning_rate: float = Field(1e-3, gt=0.0)
    """Adam learning rate for E0 and the MLP while fine-tuning."""
    finetune_batch_size: int = Field(8192, gt=0)
    finetune_select: Literal["gap", "target", "auto"] = "gap"
    """Which fine-tuning epoch to keep (epoch 0 = zero-shot is a candidate): ``gap`` = the spec's rule, largest
    mean(non-edges) − mean(request edges); ``target`` = the request edges' rank percentile closest to that of the
    same users' validation edges (the retrain proxy, ``auc_excess`` nearest 0), stopping once it is reached in rank
    or in mean score (``excess ≤ 0``), and fine-tuned with the proxy ``L_U`` (``finetune_lambda_target``);
    ``auto`` = ``target`` when the original model ranks the request edges above the users' validation edges
    (memorised plausible interactions: a retrained model ranks them like unseen true items), else ``gap``
    (edges that rank below real unseen interactions even while trained on, such as the adversarial ones: a
    retrained model puts them lower still). All subject to ``finetune_min_recall_ratio``."""
    finetune_target_excess: float = 0.0
    """``target`` rule: the ``auc_excess`` fine-tuning aims at and stops at (0 = the proxy). Pre-training with
    ``calibration_retrains`` sets it, in the encoder's config, to the retrained held-out requests' mean
    ``auc_excess``; unlearning reads it from the encoder's config (it is what pre-training learned)."""
    finetune_min_recall_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """A fine-tuning epoch (zero-shot included) is eligible only if its validation recall@20 ≥ this × that of the
    original model served on the residual graph (the utility before unlearning)."""
    finetune_scope: Literal["all", "reach"] = "all"
    """What fine-tuning updates: ``all`` (the paper: the whole layer-0 table and the MLP, BPR triples over the
    whole residual graph) or ``reach``: only the rows of the request's endpoints (its users and items) change,
    and the BPR triples are residual edges touching them, at most ``finetune_triples_per_edge`` × the request
    size per epoch, so a small request costs little and untouched nodes keep their embeddings exactly."""
    finetune_triples_per_edge: int | None = Field(None, ge=1)
    """``reach`` scope: BPR triples per request edge and epoch (``None``: every residual edge touching the reach)."""
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

    @model_serializer(mode="wrap")
    def _omit_empty_scale(self, handler):
        out = handler(self)
        if isinstance(out, dict) and not self.learning_rate_scale:
            out.pop("learning_rate_scale", None)
        return out

    @model_validator(mode="after")
    def _check_ranges(self) -> UnlearnRecConfig:
        if self.request_ratio_min > self.request_ratio_max:
            raise ValueError("request_ratio_min must not exceed request_ratio_max")
        if 20 not in self.ks:
            raise ValueError("ks must include 20 (recall@20 is the selection metric)")
        if any(not v > 0 for v in self.learning_rate_scale.values()):
            raise ValueError("learning_rate_scale factors must be positive")
        return self

    def pretrain_learning_rate(self, backbone: str) -> float:
        """The pre-training's Adam learning rate for the backbone named ``backbone``
        (``learning_rate`` × its ``learning_rate_scale``)."""
        return self.learning_rate * self.learning_rate_scale.get(backbone, 1.0)


class CalibratedConfig(UnlearnRecConfig):
    """UnlearnRec-calibrated: the paper's encoder aimed at where a retrained model puts a deletion.

    Differences from :class:`UnlearnRecConfig` (each field's docstring says why):

    * the withdraw term, relative to what a node keeps (``withdraw_center="orthogonal"``) and normalised by
      its degree (``withdraw_norm="degree"``), with ``hbar="last"`` (no request-independent offset: nodes a
      request does not reach keep their rows);
    * pre-training is a calibration (``pretrain_epochs=0``, ``calibrate_gain``): the withdraw term's global
      gain is set on held-out simulated requests so that their edges rank where a retrained model ranks them
      (``calibration_retrains=1``: one retrain of the largest held-out request, a one-off cost), within a
      utility floor of 98 % of that retrained model's validation recall;
    * users or items the request leaves without edges get fresh initial rows (``reset_isolated``);
    * fine-tuning (``target``: towards the proxy, stopping at the calibrated level) updates only the
      request's rows, on 2 triples per request edge (``finetune_scope="reach"``).

    Measured on the tuning requests (ML-1M LightGCN): a fine-tuning epoch on the request's reach raised recall
    a little but gave back some forgetting (``auc_excess`` 0.0046 -> 0.0095 on a 5 % request); with a learning
    rate high enough to move further it cost 7-35 % of recall. So the kept epoch is usually the zero-shot one.
    The pre-training knobs of the paper (``pretrain_loss="proxy"``, ``select_rule="proxy"``, ρ in
    [0.01, 0.05]) apply when ``pretrain_epochs`` > 0.
    """

    variant: Literal["paper", "calibrated"] = "calibrated"
    hbar: Literal["sum", "last"] = "last"
    withdraw_center: Literal["none", "mean", "orthogonal"] = "orthogonal"
    withdraw_norm: Literal["idm", "degree"] = "degree"
    request_ratio_min: float = Field(0.01, gt=0.0, lt=1.0)
    request_ratio_max: float = Field(0.05, gt=0.0, lt=1.0)
    pretrain_epochs: int = Field(0, ge=0)
    pretrain_loss: Literal["spec", "proxy"] = "proxy"
    calibrate_gain: bool = True
    calibration_retrains: int = Field(1, ge=0)
    calibration_min_recall_ratio: float = Field(0.98, ge=0.0, le=1.0)
    finetune_triples_per_edge: int | None = Field(2, ge=1)
    select_rule: Literal["gap", "proxy", "last"] = "proxy"
    select_min_recall_ratio: float = Field(0.98, ge=0.0, le=1.0)
    reset_isolated: bool = True
    finetune_select: Literal["gap", "target", "auto"] = "target"
    finetune_min_recall_ratio: float = Field(0.98, ge=0.0, le=1.0)
    finetune_scope: Literal["all", "reach"] = "reach"


def config_for(variant: str, values: dict | None = None) -> UnlearnRecConfig:
    """The preset of ``variant`` (``paper`` or ``calibrated``) updated with ``values``."""
    cls = {"paper": UnlearnRecConfig, "calibrated": CalibratedConfig}.get(variant)
    if cls is None:
        raise ValueError(f"unknown UnlearnRec variant {variant!r} (expected 'paper' or 'calibrated')")
    return cls.model_validate({**(values or {}), "variant": variant})
