"""Which rank owns a row of a row-wise sharded table, read from the sharded tensor's own metadata.

TorchRec's row-wise plan gives rank ``r`` the contiguous block ``[start_r, start_r + size_r)`` (blocks of
``ceil(rows / world)`` rows, the last one shorter). The owner is looked up in the shard offsets that the
``ShardedTensor`` reports rather than recomputed, so any plan (uneven blocks included) routes correctly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class RowRouting:
    """Row blocks of one table: ``starts[k]``, ``sizes[k]`` held by rank ``ranks[k]``, sorted by start."""

    starts: np.ndarray
    sizes: np.ndarray
    ranks: np.ndarray
    n_rows: int

    @classmethod
    def from_blocks(cls, blocks: list[tuple[int, int, int]], n_rows: int) -> RowRouting:
        """From ``(start, size, rank)`` triples; the blocks must tile ``[0, n_rows)``."""
        blocks = sorted(b for b in blocks if b[1] > 0)
        starts = np.array([b[0] for b in blocks], dtype=np.int64)
        sizes = np.array([b[1] for b in blocks], dtype=np.int64)
        ends = starts + sizes
        if not len(blocks) or starts[0] != 0 or ends[-1] != n_rows or (starts[1:] != ends[:-1]).any():
            raise ValueError(f"row shards {blocks} do not tile the {n_rows} rows of the table")
        return cls(starts, sizes, np.array([b[2] for b in blocks], dtype=np.int64), int(n_rows))

    @classmethod
    def from_sharded(cls, tensor) -> RowRouting:
        """From a row-wise ``ShardedTensor`` (its global shard metadata)."""
        meta = tensor.metadata()
        blocks = [(m.shard_offsets[0], m.shard_sizes[0], m.placement.rank()) for m in meta.shards_metadata]
        return cls.from_blocks(blocks, int(meta.size[0]))

    def block_of(self, rows: np.ndarray) -> np.ndarray:
        """Index into ``starts`` of the block holding each row."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            bad = rows[(rows < 0) | (rows >= self.n_rows)][:5].tolist()
            raise ValueError(f"row ids out of range [0, {self.n_rows}): {bad}")
        return np.searchsorted(self.starts, rows, side="right") - 1

    def owners(self, rows: np.ndarray) -> np.ndarray:
        """The rank that owns each row."""
        return self.ranks[self.block_of(rows)]

    def local(self, rows: np.ndarray, rank: int) -> tuple[np.ndarray, torch.Tensor]:
        """``(mask, local row index)``: which of ``rows`` rank ``rank`` owns, and where they sit in its shard."""
        rows = np.asarray(rows, dtype=np.int64)
        block = self.block_of(rows)
        mine = self.ranks[block] == rank
        return mine, torch.from_numpy(rows[mine] - self.starts[block[mine]])

    def span(self, rank: int) -> tuple[int, int]:
        """``(start, stop)`` of the rows ``rank`` holds (``(0, 0)`` for none)."""
        k = np.flatnonzero(self.ranks == rank)
        return (0, 0) if not len(k) else (int(self.starts[k[0]]), int(self.starts[k[0]] + self.sizes[k[0]]))
