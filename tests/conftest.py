"""Shared fixtures: where the real datasets are, and skipping cleanly when they are absent."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from unlearnrec.data.registry import get_spec, missing_files

REPO = Path(__file__).resolve().parents[1]

# the checksum memo of registered data files goes to a throwaway folder, never the user's ~/.cache
if "UNLEARNREC_CACHE" not in os.environ:
    import tempfile

    os.environ["UNLEARNREC_CACHE"] = tempfile.mkdtemp(prefix="unlearnrec-test-cache-")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data root: ``$UNLEARNREC_DATA``, else ``<repo>/../shared/data``; skips if absent."""
    root = Path(os.environ.get("UNLEARNREC_DATA", REPO.parent / "shared" / "data")).resolve()
    if not root.is_dir():
        pytest.skip(f"no data root at {root} (set UNLEARNREC_DATA)")
    return root


@pytest.fixture
def require_dataset(data_root: Path) -> Callable[[str], Path]:
    """``require_dataset(name)`` returns the dataset's folder, or skips if its files are missing."""

    def _require(name: str) -> Path:
        spec = get_spec(name)
        missing = missing_files(spec, data_root)
        if missing:
            pytest.skip(f"dataset {name!r} not under {data_root}: missing {', '.join(map(str, missing))}")
        return data_root / spec.path if spec.path else data_root

    return _require


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tests run tiny sparse products, where OpenMP thread hand-offs cost more than the work (5-10x slower on a
    busy 2-core machine); the setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_synthetic_data():
    """A 120 x 80 planted-community dataset (about 1.6k training pairs) shared by the unlearning tests."""
    from unlearnrec.data.synthetic import make_synthetic

    return make_synthetic(n_users=120, n_items=80, n_communities=4, mean_degree=18.0, seed=3)
