"""The one interface every unlearning method implements, and the registry behind ``--method NAME``.

An :class:`Unlearner` is set up once for a trained system (:meth:`Unlearner.prepare`: partitioning and shard
training, Hessian set-up, encoder pre-training; its cost is the *one-off* time) and then answers deletion
requests (:meth:`Unlearner.unlearn`; its cost is the *per-request* time). ``unlearn`` does not change the
unlearner: it returns an :class:`Outcome` holding the unlearned model and the residual graph it serves on.
For sequential requests, :meth:`Unlearner.apply` adopts an outcome as the new state, so that the next request
is unlearned from it.

An outcome's ``model`` is anything with ``embeddings(graph, e0=None) -> (user_emb, item_emb)``: a backbone
(:class:`~unlearnrec.models.Recommender`) or, for the partition methods, an ensemble whose aggregated
embeddings score like the aggregation rule. Every evaluation tool (ranking metrics, forgetting measures)
consumes exactly that, so every method is measured the same way, on its own residual graph.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from unlearnrec.config import RunConfig, YamlConfig
from unlearnrec.data.interactions import Interactions
from unlearnrec.graph import Graph
from unlearnrec.models.base import Recommender
from unlearnrec.unlearning.unlearnrec.idm import request_edges

ALL_BACKBONES = frozenset({"mf", "lightgcn", "sgl", "simgcl"})


class UnlearnerError(ValueError):
    """A method used where it does not apply (unknown name, unsupported backbone, not prepared)."""


@dataclass
class Context:
    """The trained system an unlearner works on.

    Attributes:
        model: the trained backbone (never modified by an unlearner).
        graph: the graph it was trained on and serves on (attacked edges included, in the adversarial scenario).
        data: the dataset (validation split for early stopping and selection; test is never used here).
        config: the recipe ``model`` was trained with (retraining, shards and fine-tuning reuse it).
        progress: show progress bars (default: when stderr is a terminal).
        train_full: ``train_full(recipe, graph) -> model``, how a method that needs a full model of the recipe
            on some graph during ``prepare`` gets one (``None``: it trains it itself); the bench passes its
            model cache, so identical trainings are done once.
    """

    model: Recommender
    graph: Graph
    data: Interactions
    config: RunConfig
    progress: bool | None = None
    train_full: Any = None

    @property
    def backbone(self) -> str:
        return self.config.model.name


@dataclass
class Outcome:
    """What one request did.

    Attributes:
        method: the unlearner's registry name.
        model: the unlearned model (``embeddings(graph)`` gives the served user and item embeddings).
        graph: the residual graph it serves on (the request edges are gone from it).
        request: the request edges (sorted unique ``(n, 2)``).
        timings: ``request_seconds`` (this request's cost) and ``prepare_seconds`` (the one-off cost it builds on),
            plus method-specific parts.
        log: method-specific details (epochs run, shards retrained, CG residuals, ...), JSON-safe.
        state: what :meth:`Unlearner.apply` needs to continue from this outcome (method-specific).
    """

    method: str
    model: Any
    graph: Graph
    request: np.ndarray
    timings: dict[str, float]
    log: dict[str, Any] = field(default_factory=dict)
    state: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no tensors)."""
        return {
            "method": self.method,
            "n_request": int(len(self.request)),
            "residual_edges": int(self.graph.n_edges),
            "timings": dict(self.timings),
            "log": self.log,
        }


class Unlearner(ABC):
    """Base class of the unlearning methods.

    Subclasses set ``name`` (registry key), ``paper`` (the method's source), ``Config`` (a
    :class:`~unlearnrec.config.YamlConfig` of its hyper-parameters) and ``backbones`` (where it applies),
    and implement :meth:`_prepare` and :meth:`_unlearn`.
    """

    name: ClassVar[str] = "base"
    paper: ClassVar[str] = ""
    Config: ClassVar[type[YamlConfig]] = YamlConfig
    backbones: ClassVar[frozenset[str]] = ALL_BACKBONES

    def __init__(self, config: YamlConfig | dict[str, Any] | None = None):
        if config is None:
            config = self.Config()
        elif isinstance(config, dict):
            config = self.Config.model_validate(config)
        elif not isinstance(config, self.Config):
            raise UnlearnerError(f"{self.name} expects a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self.ctx: Context | None = None
        self.prepare_seconds = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # ------------------------------------------------------------ public
    def prepare(self, ctx: Context) -> Unlearner:
        """One-off set-up for ``ctx`` (timed as ``prepare_seconds``); returns ``self``."""
        if ctx.backbone not in self.backbones:
            raise UnlearnerError(
                f"{self.name} does not apply to {ctx.backbone} (it supports: {', '.join(sorted(self.backbones))})"
                + (f"; {self.unsupported_reason}" if self.unsupported_reason else "")
            )
        t0 = time.perf_counter()
        self.ctx = ctx
        self._prepare(ctx)
        self.prepare_seconds = time.perf_counter() - t0
        return self

    unsupported_reason: ClassVar[str] = ""

    # ------------------------------------------------------------ sharing prepared state
    @classmethod
    def prepare_fields(cls) -> set[str] | None:
        """The config fields :meth:`prepare` depends on (``None``, the default: all of them).

        Two configurations that agree on these fields prepare the same state, so one prepared unlearner can
        serve both (:meth:`with_config`); a method whose hyper-parameters only matter per request returns them
        excluded (e.g. fine-tuning epochs after a pre-trained encoder).
        """
        return None

    def with_config(self, config: YamlConfig | dict[str, Any]) -> Unlearner:
        """A shallow copy of this (prepared) unlearner that unlearns with ``config``: same context, same
        prepared state, ``prepare_seconds`` kept.

        Raises:
            UnlearnerError: ``config`` differs from the current one in a :meth:`prepare_fields` field (its
                prepared state would not be this one).
        """
        import copy

        new_cfg = self.Config.model_validate(config) if isinstance(config, dict) else config
        if not isinstance(new_cfg, self.Config):
            raise UnlearnerError(f"{self.name} expects a {self.Config.__name__}, got {type(new_cfg).__name__}")
        fields = self.prepare_fields()
        old, new = self.config.model_dump(mode="json"), new_cfg.model_dump(mode="json")
        if fields is not None:
            old, new = ({k: v for k, v in d.items() if k in fields} for d in (old, new))
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise UnlearnerError(f"{self.name}: {', '.join(changed)} change(s) what prepare computes; "
                                 f"prepare an unlearner with that config instead")
        twin = copy.copy(self)
        twin.config = new_cfg
        return twin

    def prepared_summary(self) -> dict[str, Any] | None:
        """What ``prepare`` decided, JSON-safe, with a short ``note`` for tables (``None``: nothing to say)."""
        return None

    def save_prepared(self, directory) -> bool:
        """Write the prepared state into ``directory`` (a folder the caller owns); ``False`` when the method
        does not support it (the default), so the caller keeps nothing."""
        del directory
        return False

    def load_prepared(self, ctx: Context, directory) -> bool:
        """Restore the state :meth:`save_prepared` wrote for ``ctx`` instead of preparing; ``False`` (the
        default, or an unusable folder) when nothing was restored. The caller then sets ``ctx`` and
        ``prepare_seconds`` as :meth:`prepare` would have."""
        del ctx, directory
        return False

    def unlearn(self, request) -> Outcome:
        """Unlearn ``request`` (pairs or a :class:`DeletionRequest`) from the current state.

        Every pair must be an edge of the current graph, otherwise ``ValueError`` names the offenders and
        nothing changes. The unlearner itself is not modified (see :meth:`apply`).
        """
        ctx = self._require()
        edges = request_edges(request)
        if not len(edges):
            raise ValueError("the deletion request is empty")
        t0 = time.perf_counter()
        residual = ctx.graph.without(edges)  # strict: refuses pairs that are not edges, listing them
        outcome = self._unlearn(edges, residual)
        outcome.timings["request_seconds"] = time.perf_counter() - t0
        outcome.timings["prepare_seconds"] = self.prepare_seconds
        return outcome

    def apply(self, outcome: Outcome) -> None:
        """Adopt ``outcome`` as the current state (sequential requests build on it)."""
        ctx = self._require()
        if outcome.method != self.name:
            raise UnlearnerError(f"outcome of {outcome.method} cannot be applied to {self.name}")
        model = outcome.model if isinstance(outcome.model, Recommender) else ctx.model
        self.ctx = Context(model, outcome.graph, ctx.data, ctx.config, ctx.progress, ctx.train_full)
        self._apply(outcome)

    # ------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _prepare(self, ctx: Context) -> None: ...

    @abstractmethod
    def _unlearn(self, request: np.ndarray, residual: Graph) -> Outcome: ...

    def _apply(self, outcome: Outcome) -> None:
        """Method-specific state update; an optional hook (most methods keep no state beyond the context)."""
        del outcome

    def _require(self) -> Context:
        if self.ctx is None:
            raise UnlearnerError(f"{self.name}: call prepare(context) before unlearning")
        return self.ctx

    def _outcome(self, model, residual: Graph, request: np.ndarray, log=None, state=None, **timings) -> Outcome:
        return Outcome(self.name, model, residual, request, {k: float(v) for k, v in timings.items()},
                       dict(log or {}), state)


def copy_model(model: Recommender) -> Recommender:
    """An independent copy of a backbone: same class and config, its parameters cloned.

    Built fresh rather than deep-copied: transient state (SGL's augmented views hold sparse tensors that
    ``deepcopy`` refuses) is re-created by the copy when it trains.
    """
    import torch

    with torch.random.fork_rng(devices=[]):  # the constructor's initialisation must not consume the global RNG
        new = type(model)(model.n_users, model.n_items, model.config)
    new = new.to(device=model.embedding.device, dtype=model.embedding.dtype)
    new.load_state_dict(model.state_dict())
    new.train(model.training)
    return new


# ------------------------------------------------------------------------------ registry
UNLEARNERS: dict[str, type[Unlearner]] = {}


def register(cls: type[Unlearner]) -> type[Unlearner]:
    """Class decorator: make ``cls`` available as ``--method cls.name``."""
    if cls.name in UNLEARNERS and UNLEARNERS[cls.name] is not cls:
        raise UnlearnerError(f"two unlearners named {cls.name!r}")
    UNLEARNERS[cls.name] = cls
    return cls


def build_unlearner(name: str, config: YamlConfig | dict[str, Any] | None = None) -> Unlearner:
    """The unlearner registered as ``name`` with ``config`` (default: its defaults)."""
    from unlearnrec.unlearning import methods  # noqa: F401  (registers the built-in methods)

    try:
        cls = UNLEARNERS[name]
    except KeyError:
        raise UnlearnerError(f"unknown unlearning method {name!r}; known: {', '.join(sorted(UNLEARNERS))}") from None
    return cls(config)


def list_unlearners() -> list[dict[str, str]]:
    """Name, paper and supported backbones of every registered method."""
    from unlearnrec.unlearning import methods  # noqa: F401

    return [
        {"name": n, "paper": c.paper, "backbones": ",".join(sorted(c.backbones))}
        for n, c in sorted(UNLEARNERS.items())
    ]
