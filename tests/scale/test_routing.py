"""Row ownership of a row-wise sharded table, from its shard blocks."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnrec.scale.routing import RowRouting


def test_owners_and_local_rows_follow_the_blocks_at_their_boundaries():
    r = RowRouting.from_blocks([(6, 5, 1), (0, 6, 0)], 11)  # TorchRec's ceil blocks for 11 rows on 2 ranks
    rows = np.array([0, 5, 6, 10])
    assert r.owners(rows).tolist() == [0, 0, 1, 1]
    mine, local = r.local(rows, 1)
    assert mine.tolist() == [False, False, True, True] and local.tolist() == [0, 4]
    assert r.span(0) == (0, 6) and r.span(1) == (6, 11) and r.span(2) == (0, 0)


def test_uneven_blocks_and_an_empty_rank_route_correctly():
    r = RowRouting.from_blocks([(0, 2, 0), (2, 2, 1), (4, 1, 2), (5, 0, 3)], 5)
    assert r.owners(np.arange(5)).tolist() == [0, 0, 1, 1, 2]
    assert r.local(np.arange(5), 3)[0].sum() == 0


def test_bad_blocks_and_rows_are_refused():
    with pytest.raises(ValueError, match="do not tile the 10 rows"):
        RowRouting.from_blocks([(0, 4, 0), (5, 5, 1)], 10)
    r = RowRouting.from_blocks([(0, 5, 0), (5, 5, 1)], 10)
    with pytest.raises(ValueError, match=r"row ids out of range \[0, 10\): \[10, -1\]"):
        r.owners(np.array([3, 10, -1]))
