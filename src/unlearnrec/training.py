"""Training loop: BPR batches, Adam, early stopping on VALIDATION, seeded, resumable.

Model selection never looks at the test split: the monitored metric (``recall@20`` by default) is computed
on the validation split with the user's training items masked, and the best validation epoch's weights
are the ones returned and checkpointed.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from unlearnrec.config import TrainConfig
from unlearnrec.data.interactions import Interactions, user_item_matrix
from unlearnrec.evaluation.ranking import evaluate_ranking
from unlearnrec.graph import Graph
from unlearnrec.models.base import Recommender
from unlearnrec.sampling import BPRSampler

EpochCallback = Callable[[int, dict, "Trainer"], Any]
"""Called after every epoch with ``(epoch, record, trainer)``; returning ``True`` stops training."""


def resolve_device(name: str) -> torch.device:
    """``cpu`` (default), ``cuda``/``cuda:N`` or ``auto`` (GPU where one exists)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA GPU is available")
    return dev


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """Per-epoch generator derived from (seed, epoch): runs are reproducible and resumable mid-way."""
    return np.random.default_rng([seed, epoch])


@dataclass
class TrainState:
    """What a resumed run needs besides the weights."""

    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -np.inf
    bad_evals: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict
    epochs_run: int
    seconds: float
    stopped_early: bool
    history: list[dict]
    stop_reason: str = "epoch limit"
    """Why training ended: ``early stop`` (no validation improvement for ``patience`` evaluations),
    ``time budget`` (``max_seconds``), ``callback`` or ``epoch limit``."""

    def to_dict(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            "best_valid": self.best_valid,
            "epochs_run": self.epochs_run,
            "train_seconds": self.seconds,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
        }


def masks_for(data: Interactions, train_pairs: np.ndarray | None = None) -> dict[str, sp.csr_matrix]:
    """Truth and exclusion matrices: validation masks the training items; test masks train and validation."""
    train = data.train if train_pairs is None else train_pairs
    tr = user_item_matrix(train, data.n_users, data.n_items)
    va = user_item_matrix(data.valid, data.n_users, data.n_items)
    te = user_item_matrix(data.test, data.n_users, data.n_items)
    return {"valid_truth": va, "valid_exclude": tr, "test_truth": te, "test_exclude": (tr + va).sign().tocsr()}


class Trainer:
    """Trains a :class:`Recommender` on a graph's edges with early stopping on validation.

    Args:
        model: the backbone (its parameters are trained in place; the best epoch's are restored at the end).
        data: the dataset (validation and test splits, sizes).
        config: optimisation settings.
        graph: the training graph (default: built from ``data.train``); its edges are the BPR positives.
        callbacks: per-epoch hooks.
        progress: show a progress bar (default: only when stderr is a terminal).
        mask_edges: the training pairs masked when ranking for validation and test (default: ``graph``'s
            edges). A model trained on part of the training graph (a partition method's shard) is validated
            like the full model when this is the full training graph's edges: a user's training items held by
            other shards are then neither ranked nor counted as misses.
    """

    def __init__(
        self,
        model: Recommender,
        data: Interactions,
        config: TrainConfig,
        graph: Graph | None = None,
        callbacks: list[EpochCallback] | None = None,
        progress: bool | None = None,
        mask_edges: np.ndarray | None = None,
    ):
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.data = data
        self.config = config
        self.graph = (graph or Graph(data.train, data.n_users, data.n_items)).to(self.device)
        self.sampler = BPRSampler(self.graph.edges, data.n_items)
        self.masks = masks_for(data, self.graph.edges if mask_edges is None else np.asarray(mask_edges))
        self.callbacks = list(callbacks or [])
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.state = TrainState()
        self.best_weights: dict[str, torch.Tensor] | None = None

    # ----------------------------------------------------------- evaluation
    def validate(self) -> dict:
        u, i = self.model.embeddings(self.graph)
        return evaluate_ranking(
            u, i, self.masks["valid_truth"], self.masks["valid_exclude"], ks=self.config.ks
        ).metrics

    def test(self) -> dict:
        u, i = self.model.embeddings(self.graph)
        return evaluate_ranking(u, i, self.masks["test_truth"], self.masks["test_exclude"], ks=self.config.ks).metrics

    # ------------------------------------------------------------- training
    def train_epoch(self, epoch: int) -> dict:
        rng = epoch_rng(self.config.seed, epoch)
        torch.manual_seed(int(rng.integers(2**62)))
        self.model.train()
        self.model.start_epoch(self.graph, rng)
        totals: dict[str, float] = {}
        n = 0
        for batch in self.sampler.epoch(self.config.batch_size, rng, self.device):
            loss, parts = self.model.loss(batch, self.graph)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
            n += 1
        return {k: v / max(1, n) for k, v in totals.items()}

    def fit(self) -> TrainResult:
        cfg, st = self.config, self.state
        if self.best_weights is None:
            self.best_weights = copy.deepcopy(self.model.state_dict())
        stopped, reason = False, "epoch limit"
        start_epoch = st.epoch
        bar = tqdm(
            range(start_epoch + 1, cfg.epochs + 1),
            desc=f"train {self.model.name}",
            disable=not self.progress,
            leave=False,
            initial=start_epoch,
            total=cfg.epochs,
        )
        for epoch in bar:
            t0 = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch)}
            record["train_seconds"] = time.perf_counter() - t0
            if not len(self.data.valid):  # no validation split (e.g. a refit on train+valid): keep the last epoch
                st.best_epoch = epoch
                self.best_weights = None
            elif epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                t1 = time.perf_counter()
                valid = self.validate()
                record["valid"] = valid
                record["eval_seconds"] = time.perf_counter() - t1
                score = valid[cfg.monitor]
                if score > st.best_score:
                    st.best_score, st.best_epoch, st.bad_evals = score, epoch, 0
                    self.best_weights = copy.deepcopy(self.model.state_dict())
                else:
                    st.bad_evals += 1
                bar.set_postfix(loss=f"{record['loss']:.4f}", **{cfg.monitor: f"{score:.4f}"}, best=st.best_epoch)
            st.epoch = epoch
            st.seconds += time.perf_counter() - t0
            st.history.append(record)
            halt = any(cb(epoch, record, self) is True for cb in self.callbacks)
            if st.bad_evals >= cfg.patience:
                stopped, reason = True, "early stop"
                break
            if halt:
                reason = "callback"
                break
            if cfg.max_seconds is not None and st.seconds >= cfg.max_seconds and epoch < cfg.epochs:
                reason = "time budget"
                break
        bar.close()
        if self.best_weights is None:
            self.best_weights = copy.deepcopy(self.model.state_dict())
        best_valid = next((r["valid"] for r in st.history if r["epoch"] == st.best_epoch and "valid" in r), {})
        return TrainResult(st.best_epoch, best_valid, st.epoch, st.seconds, stopped, st.history, reason)

    def restore_best(self) -> None:
        """Load the best validation epoch's weights into the model."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)


# ------------------------------------------------------------------ resume support
def trainer_state_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Current weights and optimiser moments as flat tensors (for ``train_state.safetensors``)."""
    out = {f"current.{k}": v for k, v in trainer.model.state_dict().items()}
    for idx, st in trainer.optimizer.state_dict()["state"].items():
        for key, val in st.items():
            out[f"optim.{idx}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
    return out


def trainer_state_meta(trainer: Trainer) -> dict:
    st = trainer.state
    return {
        "epoch": st.epoch,
        "best_epoch": st.best_epoch,
        "best_score": st.best_score,
        "bad_evals": st.bad_evals,
        "seconds": st.seconds,
        "history": st.history,
    }


def restore_trainer(
    trainer: Trainer, tensors: dict[str, torch.Tensor], meta: dict, best: dict[str, torch.Tensor]
) -> None:
    """Put a trainer back where :func:`trainer_state_tensors` / :func:`trainer_state_meta` left it."""
    current = {k[len("current.") :]: v for k, v in tensors.items() if k.startswith("current.")}
    trainer.model.load_state_dict(current)
    opt = trainer.optimizer.state_dict()
    state: dict[int, dict] = {}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val.to(trainer.device) if name != "step" else val
    opt["state"] = state
    trainer.optimizer.load_state_dict(opt)
    trainer.best_weights = {k: v.to(trainer.device) for k, v in best.items()}
    trainer.state = TrainState(
        epoch=int(meta["epoch"]),
        best_epoch=int(meta["best_epoch"]),
        best_score=float(meta["best_score"]) if meta["best_score"] is not None else -np.inf,
        bad_evals=int(meta["bad_evals"]),
        seconds=float(meta["seconds"]),
        history=list(meta.get("history", [])),
    )
