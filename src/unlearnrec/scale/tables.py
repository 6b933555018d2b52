"""LightGCN's layer-0 tables row-wise sharded across ranks with TorchRec, and unlearning written on owner rows.

The user and the item table of a LightGCN (He et al., SIGIR 2020) become two tables of one TorchRec
``EmbeddingCollection`` (Ivchenko et al., *TorchRec*, RecSys 2022), row-wise sharded under
``DistributedModelParallel``: rank ``r`` holds one contiguous block of each. Every rank keeps the edge store
(the graph); a forward looks up the layer-0 rows of a sampled subgraph (the L-hop neighbourhood of the
touched nodes, full-graph normalisation: :mod:`~unlearnrec.scale.subgraph`) through TorchRec's all-to-all and
propagates locally, so the touched nodes' embeddings equal the in-memory model's.

Unlearning (UnlearnRec, Chen et al., SIGIR 2025, writes new layer-0 rows; erased users get fresh rows) is a
row write: :meth:`ShardedLightGCN.write_rows` routes each row to the rank that owns it (:class:`RowRouting`
over the sharded tensor's metadata), which writes it into its shard through the sharded state dict's
``local_shards()``; no other rank's memory is touched. :meth:`ShardedLightGCN.send_rows` sends an edit held by
one rank (where the ledger and the encoder run) to the owners, each receiving only its own rows. The fused
optimizer's per-row state of the edited rows (row-wise Adagrad's ``momentum1``, exposed by
``fused_optimizer.state`` as a row-sharded tensor) is reset, as a freshly initialised row would have it.

Measured on CPU (torchrec 1.8.0, fbgemm-gpu-cpu 1.8.0, gloo): row-wise sharding needs the ``fused`` compute
kernel; with the ``dense`` kernel the CPU lookup of an ``EmbeddingCollection`` returns one row per bag instead of
one per id and the output all-to-all fails ("Split sizes doesn't match") or corrupts the heap. The fused
kernel trains with exact SGD or (exact) row-wise Adagrad on CPU; Adam is refused there.

Every method marked *collective* must be called on all ranks together (each with its own arguments).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from unlearnrec.distributed import DistContext
from unlearnrec.graph import Graph
from unlearnrec.models.base import Batch, Recommender, bpr_loss
from unlearnrec.scale.routing import RowRouting
from unlearnrec.scale.subgraph import propagate_subgraph, sample_subgraph

TABLES = ("user", "item")


def changed_rows(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(nodes, rows)``: the nodes whose layer-0 row an unlearner changed (``after != before`` anywhere in the
    row) and their new rows, i.e. what :meth:`ShardedLightGCN.write_rows` must store."""
    if before.shape != after.shape:
        raise ValueError(f"tables differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
    nodes = (before != after).any(1).nonzero().flatten()
    return nodes, after[nodes]


class ShardedTablesConfig(BaseModel):
    """Settings of the sharded tables and their fused (in-backward) optimizer."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["rowwise_adagrad", "sgd"] = "rowwise_adagrad"
    """Fused optimizer: exact row-wise Adagrad (one accumulator per row) or exact SGD (no state)."""
    learning_rate: float = Field(0.05, gt=0.0)
    eps: float = Field(1e-8, gt=0.0)
    """Row-wise Adagrad's denominator floor."""


class _Tables(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, device: torch.device):
        super().__init__()
        from torchrec import EmbeddingCollection, EmbeddingConfig

        sizes = {"user": n_users, "item": n_items}
        self.ec = EmbeddingCollection(
            tables=[
                EmbeddingConfig(name=t, embedding_dim=dim, num_embeddings=sizes[t], feature_names=[t]) for t in TABLES
            ],
            device=device,
        )

    def forward(self, kjt):
        return self.ec(kjt)


class ShardedLightGCN:
    """A LightGCN whose layer-0 user and item tables are row-wise sharded over the ranks of ``ctx``.

    Build it on every rank (collective) with :meth:`from_model` or :meth:`from_checkpoint`.

    Args:
        ctx: this rank's place in the (gloo) group of :func:`unlearnrec.distributed.launch`.
        n_users, n_items, dim: table shapes.
        n_layers: LightGCN depth (the subgraph depth of every forward).
        reg: L2 weight on the batch's layer-0 rows (LightGCN's regulariser) in :meth:`train_step`.
        config: the fused optimizer.
    """

    def __init__(
        self,
        ctx: DistContext,
        n_users: int,
        n_items: int,
        dim: int,
        n_layers: int,
        reg: float = 0.0,
        config: ShardedTablesConfig | None = None,
    ):
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from torchrec.distributed.embedding import EmbeddingCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.distributed.sharding_plan import construct_module_sharding_plan, row_wise
        from torchrec.distributed.types import ShardingEnv, ShardingPlan

        if not dist.is_initialized():
            raise RuntimeError("ShardedLightGCN needs a process group: run it under unlearnrec.distributed.launch")
        self.ctx, self.config = ctx, config or ShardedTablesConfig()
        self.n_users, self.n_items, self.dim, self.n_layers, self.reg = n_users, n_items, dim, n_layers, reg
        opt = {"rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "sgd": EmbOptimType.EXACT_SGD}
        fused = {"optimizer": opt[self.config.optimizer], "learning_rate": self.config.learning_rate}
        if self.config.optimizer == "rowwise_adagrad":
            fused["eps"] = self.config.eps
        sharder = EmbeddingCollectionSharder(fused_params=fused)
        module = _Tables(n_users, n_items, dim, torch.device("meta"))  # rows are materialised per shard only
        plan = construct_module_sharding_plan(
            module.ec,
            {t: row_wise(compute_kernel="fused") for t in TABLES},
            sharder=sharder,
            local_size=ctx.world_size,
            world_size=ctx.world_size,
            device_type=ctx.device.type,
        )
        self.dmp = DistributedModelParallel(
            module,
            env=ShardingEnv.from_process_group(dist.group.WORLD),
            device=ctx.device,
            plan=ShardingPlan({"ec": plan}),
            sharders=[sharder],
        )
        sd = self.dmp.state_dict()
        self._weights = {t: sd[self._key(t)] for t in TABLES}
        self.routing = {t: RowRouting.from_sharded(self._weights[t]) for t in TABLES}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, ctx: DistContext, model: Recommender, config: ShardedTablesConfig | None = None):
        """Shard ``model``'s layer-0 table (collective); each rank writes only the rows it owns."""
        if model.name != "lightgcn":
            raise ValueError(f"sharded tables are built from a lightgcn model, got {model.name!r}")
        c = model.config
        tables = cls(ctx, model.n_users, model.n_items, c.embedding_size, c.n_layers, c.reg, config)
        e0 = model.embedding.detach().cpu()
        tables.write_rows(torch.arange(e0.shape[0]), e0, reset_state=False)
        return tables

    @classmethod
    def from_checkpoint(cls, ctx: DistContext, directory: str | Path, config: ShardedTablesConfig | None = None):
        """Shard a LightGCN checkpoint (collective); each rank reads only its own rows of ``model.safetensors``."""
        from safetensors import safe_open

        from unlearnrec.checkpoint import CHECKPOINT_FORMAT, CONFIG_FILE, MODEL_FILE, read_meta
        from unlearnrec.config import RunConfig

        directory = Path(directory)
        meta = read_meta(directory, (MODEL_FILE, CONFIG_FILE), CHECKPOINT_FORMAT, "a checkpoint")
        mc = RunConfig.load(directory / CONFIG_FILE).model
        if meta.get("model") != "lightgcn":
            raise ValueError(
                f"{directory}: sharded tables are built from a lightgcn checkpoint, not {meta.get('model')!r}"
            )
        n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
        tables = cls(ctx, n_users, n_items, mc.embedding_size, mc.n_layers, mc.reg, config)
        with safe_open(str(directory / MODEL_FILE), framework="pt") as f:
            table = f.get_slice("embedding")
            for t, base in (("user", 0), ("item", n_users)):
                start, stop = tables.routing[t].span(ctx.rank)
                if stop > start:
                    rows = torch.arange(base + start, base + stop)
                    tables.write_rows(rows, table[base + start : base + stop], reset_state=False)
        return tables

    # ------------------------------------------------------------------ rows
    @staticmethod
    def _key(table: str) -> str:
        return f"ec.embeddings.{table}.weight"

    def _split(self, nodes: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per table: positions in ``nodes`` and the table row ids (items are offset by ``n_users``)."""
        is_user = nodes < self.n_users
        pu, pi = is_user.nonzero().flatten(), (~is_user).nonzero().flatten()
        return {"user": (pu, nodes[pu]), "item": (pi, nodes[pi] - self.n_users)}

    def _as_nodes(self, nodes) -> torch.Tensor:
        n = torch.as_tensor(np.asarray(nodes.cpu() if isinstance(nodes, torch.Tensor) else nodes))
        if n.ndim != 1 or (n.numel() and n.dtype.is_floating_point) or n.dtype == torch.bool:
            raise ValueError(f"nodes must be a 1-D array of integer node ids, got shape {tuple(n.shape)} {n.dtype}")
        n = n.long()
        total = self.n_users + self.n_items
        if n.numel() and (int(n.min()) < 0 or int(n.max()) >= total):
            raise ValueError(f"node ids out of range [0, {total}): {n[(n < 0) | (n >= total)][:5].tolist()}")
        return n

    def shard(self, table: str) -> tuple[int, torch.Tensor]:
        """``(first row, live view)`` of this rank's shard of ``table`` (``"user"`` or ``"item"``)."""
        shards = self._weights[table].local_shards()
        if not shards:
            return 0, torch.empty(0, self.dim)
        return int(shards[0].metadata.shard_offsets[0]), shards[0].tensor

    def _state_rows(self, table: str) -> list[torch.Tensor]:
        """This rank's shards of the fused optimizer's per-row state of ``table`` (live views)."""
        out = []
        for state in self.dmp.fused_optimizer.state.values():
            for name, value in state.items():
                if name.split(".")[0] == table and hasattr(value, "local_shards"):
                    out += [s.tensor for s in value.local_shards()]
        return out

    def optimizer_state(self, table: str) -> list[torch.Tensor]:
        """Copies of this rank's per-row optimizer state of ``table`` (e.g. row-wise Adagrad's ``momentum1``)."""
        return [s.detach().clone() for s in self._state_rows(table)]

    @torch.no_grad()
    def write_rows(self, nodes, rows: torch.Tensor, *, reset_state: bool = True) -> int:
        """Write layer-0 ``rows`` for global ``nodes`` (users first); only the owner rank stores each row.

        Every rank may be given the whole edit (it keeps its own part) or just its part: nothing is sent. With
        ``reset_state`` the optimizer's per-row state of the edited rows is zeroed. Returns the number of rows
        this rank wrote. Takes effect in the next forward.
        """
        nodes = self._as_nodes(nodes)
        rows = torch.as_tensor(rows)
        if rows.shape != (nodes.numel(), self.dim):
            raise ValueError(f"rows must have shape ({nodes.numel()}, {self.dim}), got {tuple(rows.shape)}")
        if nodes.unique().numel() != nodes.numel():
            raise ValueError("nodes repeat: each row may be written once per call")
        written = 0
        for table, (pos, ids) in self._split(nodes).items():
            mine, local = self.routing[table].local(ids.numpy(), self.ctx.rank)
            if not mine.any():
                continue
            start, shard = self.shard(table)
            if local.numel() and (int(local.min()) < 0 or int(local.max()) >= shard.shape[0]):
                raise RuntimeError(
                    f"{table} rows routed to rank {self.ctx.rank} fall outside its shard "
                    f"[{start}, {start + shard.shape[0]}): the row routing is wrong"
                )
            shard[local] = rows[pos[torch.from_numpy(mine)]].to(shard.dtype)
            if reset_state:
                for state in self._state_rows(table):
                    state[local] = 0
            written += int(mine.sum())
        return written

    def send_rows(self, nodes=None, rows: torch.Tensor | None = None, *, src: int = 0, reset_state: bool = True) -> int:
        """Route an edit held by rank ``src`` (e.g. where the deletion ledger and the encoder run) to the owner
        ranks, each receiving only its own rows, which it then writes (collective; other ranks pass nothing).
        Returns the number of rows this rank received and wrote."""
        parts: list = [None] * self.ctx.world_size
        if self.ctx.rank == src:
            nodes = self._as_nodes(nodes)
            rows = torch.as_tensor(rows)
            if rows.shape != (nodes.numel(), self.dim):
                raise ValueError(f"rows must have shape ({nodes.numel()}, {self.dim}), got {tuple(rows.shape)}")
            owner = torch.empty(nodes.numel(), dtype=torch.long)
            for table, (pos, ids) in self._split(nodes).items():
                owner[pos] = torch.from_numpy(self.routing[table].owners(ids.numpy()))
            parts = [(nodes[owner == r], rows[owner == r].clone()) for r in range(self.ctx.world_size)]
        box: list = [None]
        dist.scatter_object_list(box, parts if self.ctx.rank == src else None, src=src)
        mine_nodes, mine_rows = box[0]
        written = self.write_rows(mine_nodes, mine_rows, reset_state=reset_state)
        if written != mine_nodes.numel():
            raise RuntimeError(
                f"rank {self.ctx.rank} was sent {mine_nodes.numel() - written} row(s) it does not own: "
                "the row routing is wrong"
            )
        return written

    # ------------------------------------------------------------------ forward
    def lookup(self, nodes) -> torch.Tensor:
        """Layer-0 rows of ``nodes`` from their owners (collective; differentiable into the fused optimizer)."""
        from torchrec import KeyedJaggedTensor

        nodes = self._as_nodes(nodes)
        parts = self._split(nodes)
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(TABLES),
            values=torch.cat([parts[t][1] for t in TABLES]),
            lengths=torch.tensor([parts[t][1].numel() for t in TABLES], dtype=torch.long),
        )
        found = self.dmp(kjt).wait()
        values = torch.cat([found[t].values() for t in TABLES])
        positions = torch.cat([parts[t][0] for t in TABLES])
        return torch.zeros(nodes.numel(), self.dim, dtype=values.dtype).index_copy(0, positions, values)

    def embed(self, graph: Graph, seeds) -> torch.Tensor:
        """Final LightGCN embeddings of ``seeds`` over their ``n_layers``-hop subgraph of ``graph`` (collective)."""
        sub = sample_subgraph(graph, seeds, self.n_layers)
        return propagate_subgraph(sub, self.lookup(sub.nodes), self.n_layers)

    def train_step(self, graph: Graph, batch: Batch) -> float:
        """One BPR step on this rank's ``batch`` over the batch's subgraph (collective); the fused optimizer
        applies the update in the backward, on the owner ranks. Returns this rank's loss."""
        seeds = torch.cat([batch.users, self.n_users + batch.pos, self.n_users + batch.neg])
        sub = sample_subgraph(graph, seeds, self.n_layers)
        rows = self.lookup(sub.nodes)
        emb = propagate_subgraph(sub, rows, self.n_layers)
        b = len(batch)
        u, p, n = emb[:b], emb[b : 2 * b], emb[2 * b :]
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        if self.reg:
            loss = loss + self.reg * 0.5 * rows[sub.seeds].pow(2).sum() / max(b, 1)
        loss.backward()
        return float(loss.detach())

    # ------------------------------------------------------------------ inspection
    def full_table(self) -> torch.Tensor:
        """The whole layer-0 table (users first) gathered on every rank (collective; small tables, tests)."""
        mine = {t: (self.shard(t)[0], self.shard(t)[1].detach().clone()) for t in TABLES}
        gathered: list = [None] * self.ctx.world_size
        dist.all_gather_object(gathered, mine)
        out = torch.empty(self.n_users + self.n_items, self.dim)
        for part in gathered:
            for t, base in (("user", 0), ("item", self.n_users)):
                start, rows = part[t]
                out[base + start : base + start + rows.shape[0]] = rows
        return out
