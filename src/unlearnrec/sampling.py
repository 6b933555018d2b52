"""Vectorised BPR triple sampling: every training edge once per epoch, negatives outside the user's positives."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from unlearnrec.data.interactions import as_pairs, pair_keys
from unlearnrec.models.base import Batch


class BPRSampler:
    """Draws ``(user, positive, negative)`` triples from a fixed set of positive pairs.

    Each epoch visits every positive pair once in a random order; each negative is drawn uniformly from
    the items the user has no positive pair with (rejection sampling, vectorised over the whole epoch).

    Args:
        pairs: ``(n, 2)`` positive ``(user, item)`` pairs (the training graph's edges).
        n_items: number of items.
    """

    def __init__(self, pairs: np.ndarray, n_items: int, max_rounds: int = 100):
        self.pairs = as_pairs(pairs)
        self.n_items = int(n_items)
        self.keys = np.unique(pair_keys(self.pairs, n_items))
        self.max_rounds = max_rounds

    def __len__(self) -> int:
        return len(self.pairs)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        q = users * self.n_items + items
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return self.keys[pos] == q

    def positives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform positive item of each entry of ``users`` (every one must have a positive pair)."""
        users = np.asarray(users, dtype=np.int64)
        lo = np.searchsorted(self.keys, users * self.n_items)
        hi = np.searchsorted(self.keys, (users + 1) * self.n_items)
        if (hi <= lo).any():
            raise ValueError(f"users without positive pairs: {np.unique(users[hi <= lo])[:10].tolist()}")
        idx = lo + (rng.random(len(users)) * (hi - lo)).astype(np.int64)
        return self.keys[idx] % self.n_items

    def negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform negative item per entry of ``users``."""
        neg = rng.integers(0, self.n_items, size=len(users))
        todo = np.flatnonzero(self.is_positive(users, neg))
        for _ in range(self.max_rounds):
            if not len(todo):
                break
            neg[todo] = rng.integers(0, self.n_items, size=len(todo))
            todo = todo[self.is_positive(users[todo], neg[todo])]
        return neg  # users who like every item keep a (rare) positive as negative

    def epoch(self, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu") -> Iterator[Batch]:
        """Batches covering every positive pair once, in a random order."""
        return self.epoch_of(None, batch_size, rng, device)

    def epoch_of(
        self, index: np.ndarray | None, batch_size: int, rng: np.random.Generator,
        device: torch.device | str = "cpu", limit: int | None = None,
    ) -> Iterator[Batch]:
        """Batches over the positive pairs ``self.pairs[index]`` (all when ``None``) in a random order, at most
        ``limit`` of them (a uniform sample without replacement). Negatives still avoid *every* positive pair of
        the user in this sampler, not only the selected ones."""
        n = len(self.pairs) if index is None else len(index)
        order = rng.permutation(n)
        if limit is not None:
            order = order[: int(limit)]
        if index is not None:
            order = np.asarray(index, dtype=np.int64)[order]
        users = self.pairs[order, 0]
        pos = self.pairs[order, 1]
        neg = self.negatives(users, rng)
        u_t, p_t, n_t = (torch.from_numpy(a).to(device) for a in (users, pos, neg))
        for start in range(0, len(order), batch_size):
            sl = slice(start, start + batch_size)
            yield Batch(u_t[sl], p_t[sl], n_t[sl])

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.pairs) // batch_size)
