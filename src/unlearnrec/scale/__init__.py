"""Scale beyond one process: LightGCN's layer-0 tables row-wise sharded with TorchRec (optional extra ``scale``).

:mod:`~unlearnrec.scale.subgraph` (the L-hop subgraph with full-graph normalisation) needs only torch;
:mod:`~unlearnrec.scale.tables` needs ``torchrec`` and ``fbgemm-gpu-cpu`` (``make install-scale``).
"""

from __future__ import annotations

import warnings

from unlearnrec.scale.subgraph import Subgraph, khop_nodes, propagate_subgraph, sample_subgraph


def torchrec_missing() -> str | None:
    """Why the sharded tables cannot run here (one line), or ``None`` when torchrec imports."""
    try:
        with warnings.catch_warnings():  # fbgemm's import-time notices (optional SSD kernels, deprecations)
            warnings.simplefilter("ignore")
            import torchrec  # noqa: F401
            from torchrec.distributed.model_parallel import DistributedModelParallel  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure is reported as the reason
        return f"torchrec unavailable ({type(exc).__name__}: {exc}); install it with `make install-scale`"
    return None


__all__ = ["Subgraph", "khop_nodes", "propagate_subgraph", "sample_subgraph", "torchrec_missing"]
