"""The benchmark grid's configuration (``unlearnrec bench --config FILE``), a strict YAML round-trip config.

A :class:`BenchConfig` names the grid (datasets × backbones × methods × scenarios × seeds), the training
recipe every full model is trained with, the measures to take and where results and trained models go::

    name: ml1m-reduced
    datasets: [ml-1m]
    backbones: [lightgcn, mf]
    methods:
      retrain: {}
      edgedrop: {}
      finetune: {epochs: 3}
      finetune 1 epoch: {method: finetune, epochs: 1}   # an alias: label -> registered method
    scenarios:
      - {kind: random, ratio: 0.01}
      - {kind: users, selection: most_active, ratio: 0.01}
    seeds: [0, 1]
    recipe: {base: ml1m.yaml, max_seconds: 90}
    measures: {reference_seed_offsets: [1, 2, 3], membership: {enabled: true, n_shadow: 2, epochs: 5}}
    out: runs/bench-ml1m

Recipe precedence: ``base`` file (a :class:`~unlearnrec.config.RunConfig` YAML, relative to the bench config's
folder) < ``inline`` (nested RunConfig fields) < ``overrides`` (dotted keys) < ``max_seconds`` <
``backbone_overrides[backbone]`` < the grid itself (dataset, backbone, seed, device).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from unlearnrec.config import ModelName, RunConfig, YamlConfig, _Strict

__all__ = [
    "BenchConfig",
    "BenchConfigError",
    "MeasuresSpec",
    "MembershipSpec",
    "QuantizationSpec",
    "RecipeSpec",
    "RelearningSpec",
    "ScenarioSpec",
]

ScenarioKind = Literal["random", "users", "items", "adversarial", "sequential"]
Selection = Literal["most_active", "least_active", "random"]


class BenchConfigError(ValueError):
    """A benchmark configuration that cannot run (reported before any training starts)."""


#: Table rows of the references, which no method label may take.
RESERVED_LABELS = frozenset({"original", "noise floor"})


def safe_name(name: str) -> str:
    """``name`` as a file-name part: runs of anything but letters, digits and ``._+=-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", str(name))


def _pct(x: float) -> str:
    return f"{float(x) * 100:g}pct"


class ScenarioSpec(_Strict):
    """One deletion scenario.

    * ``random``: ``ratio`` of the training edges at random (seeded by the scenario's ``seed``, default the cell's);
    * ``users`` / ``items``: every edge of whole users (items) chosen by ``selection`` (``most_active``,
      ``least_active`` or ``random``; CURE4Rec's core / edge / random data): ``n`` of them or a ``ratio`` of those
      with training edges;
    * ``adversarial``: the paper's injected least-likely edges (``ratio`` of users and items inject, default 1);
      the original is retrained on the attacked graph and the injected edges are the request;
    * ``sequential``: ``rounds`` random-edge requests of ``ratio`` each, unlearned one after another
      (``Unlearner.apply`` between rounds).
    """

    kind: ScenarioKind
    ratio: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1)
    selection: Selection | None = None
    rounds: int | None = Field(None, ge=1)
    seed: int | None = None
    """Seed of the request draw (random edges, random users/items, the rounds; ``ratio < 1`` adversarial
    injection). Default: the cell's seed. Tuning grids give their requests their own seeds, so that reported
    numbers come from requests no hyper-parameter was chosen on."""
    name: str | None = None
    """Label in tables and file names (default: built from the spec, e.g. ``users-most_active-1pct``)."""
    methods: list[str] | None = None
    """Method labels (entries of ``methods``) that run on this scenario; default all. Lets one grid hold
    scenarios that only some methods are reported on, without paying for the other cells."""

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("selection"), str):
            data = {**data, "selection": data["selection"].replace("-", "_")}
        return data

    @model_validator(mode="after")
    def _check(self) -> ScenarioSpec:
        k = self.kind
        given = {f for f in ("ratio", "n", "selection", "rounds") if getattr(self, f) is not None}
        allowed = {"random": {"ratio"}, "users": {"ratio", "n", "selection"}, "items": {"ratio", "n", "selection"},
                   "adversarial": {"ratio"}, "sequential": {"ratio", "rounds"}}[k]
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(f"a {k} scenario does not take {', '.join(extra)} (it takes {', '.join(sorted(allowed))})")
        if k in ("random", "sequential") and self.ratio is None:
            raise ValueError(f"a {k} scenario needs ratio (share of the training edges per request)")
        if k == "sequential" and self.rounds is None:
            raise ValueError("a sequential scenario needs rounds (number of requests)")
        if k in ("users", "items") and (self.ratio is None) == (self.n is None):
            raise ValueError(f"a {k} scenario needs exactly one of n (count) or ratio (share of the {k})")
        if self.name is not None and not self.name.strip():
            raise ValueError("scenario name must not be empty")
        if self.methods is not None and not self.methods:
            raise ValueError("scenario methods must not be empty (leave it out to run every method)")
        return self

    def key_dump(self) -> dict:
        """The spec as it enters cache and cell keys: which methods a scenario runs changes no number of its
        request, references or cells, so a scenario restricted to some methods shares its keys with the whole one."""
        return {**self.model_dump(mode="json"), "methods": None}

    @property
    def selection_or_default(self) -> str:
        return self.selection or "random"

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self._base_label + (f"-s{self.seed}" if self.seed is not None else "")

    @property
    def _base_label(self) -> str:
        if self.kind == "random":
            return f"random-{_pct(self.ratio)}"
        if self.kind in ("users", "items"):
            size = f"n{self.n}" if self.n is not None else _pct(self.ratio)
            return f"{self.kind}-{self.selection_or_default}-{size}"
        if self.kind == "adversarial":
            return f"adversarial-{_pct(self.ratio if self.ratio is not None else 1.0)}"
        return f"sequential-{self.rounds}x{_pct(self.ratio)}"


class RecipeSpec(_Strict):
    """How every full model (original, retrain references) is trained."""

    base: str | None = None
    """A RunConfig YAML; relative paths are looked up next to the bench config file, then in the working dir."""
    inline: dict[str, Any] = Field(default_factory=dict)
    """Nested RunConfig fields merged over ``base`` (e.g. ``{train: {epochs: 50}}``)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Dotted ``key: value`` overrides (e.g. ``train.eval_every: 2``)."""
    max_seconds: float | None = Field(None, gt=0)
    """Wall-clock training budget of each full model (the best validation epoch so far is kept)."""
    backbone_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per backbone: dotted overrides applied last (e.g. ``mf: {train.learning_rate: 0.01}``)."""

    @field_validator("backbone_overrides", mode="before")
    @classmethod
    def _none_to_empty(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (x or {}) for k, x in v.items()}
        return v


class MembershipSpec(_Strict):
    """Shadow-model membership-inference audit (:func:`~unlearnrec.evaluation.membership.shadow_auditor`)."""

    enabled: bool = False
    n_shadow: int = Field(2, ge=1)
    epochs: int = Field(5, ge=1)
    """Training epochs of each shadow (the recipe otherwise)."""
    max_pairs_per_shadow: int = Field(20_000, ge=2)
    classifier: Literal["mlp", "logreg"] = "mlp"
    max_audit_pairs: int = Field(5_000, ge=1)
    """Members (request edges) and non-members (held-out test pairs of the request's users) audited, each."""


class RelearningSpec(_Strict):
    """Relearning stress test (:func:`~unlearnrec.evaluation.robustness.relearning_curve`)."""

    enabled: bool = False
    steps: int = Field(10, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(1024, ge=1)
    mode: Literal["auto", "model", "embeddings"] = "auto"


class QuantizationSpec(_Strict):
    """Quantization stress test (:func:`~unlearnrec.evaluation.robustness.quantization_report`)."""

    enabled: bool = False
    modes: list[Literal["fp32", "fp16", "bf16", "int8"]] = Field(default_factory=lambda: ["fp32", "fp16", "int8"])
    granularity: Literal["row", "tensor"] = "row"


class MeasuresSpec(_Strict):
    """Which measures every cell takes (utility is always measured)."""

    k: int = Field(20, ge=1)
    """Cut-off of recall/NDCG, of the Jaccard overlap and of the NDCG activity gap."""
    active_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    """Share of most active evaluated users in the NDCG gap (CURE4Rec: 5%)."""
    forgetting: bool = True
    """MI-BF, MI-NG, request score and rank percentile against the original."""
    n_samples: int = Field(10_000, ge=1)
    """Random non-edges and remaining positives sampled by the forgetting measures."""
    anchored: bool = True
    """Top-k Jaccard, JS divergence and rank-percentile difference against each retrain reference (mean, sd)."""
    reference_seed_offsets: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    """One retrain reference per offset: the recipe with ``train.seed`` = cell seed + offset, trained on exactly
    the residual graph. Distinct and never 0 (0 is the original's seed: a retrain from the original's initial
    embeddings stays close to it whatever it forgot)."""
    noise_floor: bool = True
    """Measure the noise floor, the anchored measures between every two references (what exact unlearning
    shows); needs at least 2 references, and 3 (2 pairs) for the ``in floor`` verdict."""
    membership: MembershipSpec = Field(default_factory=MembershipSpec)
    relearning: RelearningSpec = Field(default_factory=RelearningSpec)
    quantization: QuantizationSpec = Field(default_factory=QuantizationSpec)
    plot_samples: int = Field(2_000, ge=10)
    """Scores / rank percentiles kept per set for the plots (in each cell's JSON)."""

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "noise_floor_seed_offset" in data:
            raise ValueError("noise_floor_seed_offset was replaced by reference_seed_offsets (a list of seed "
                             "offsets, one retrain reference each, e.g. [1, 2, 3]); the noise floor is now "
                             "measured between the references")
        return data

    @model_validator(mode="after")
    def _references(self) -> MeasuresSpec:
        offs = self.reference_seed_offsets
        if 0 in offs:
            raise ValueError("reference_seed_offsets must not contain 0: that is the original model's seed, and a "
                             "reference sharing its initial embeddings cannot tell a no-op from forgetting")
        dup = sorted({x for x in offs if offs.count(x) > 1})
        if dup:
            raise ValueError(f"reference_seed_offsets lists {', '.join(map(str, dup))} more than once")
        if self.noise_floor and len(offs) < 2:
            raise ValueError(f"noise_floor needs at least 2 references (reference_seed_offsets has {len(offs)}); "
                             f"add offsets or set noise_floor: false")
        return self


class BenchConfig(YamlConfig):
    """The whole benchmark grid (see the module docstring)."""

    name: str = "bench"
    datasets: list[str] = Field(default_factory=lambda: ["synthetic"], min_length=1)
    data_root: str | None = None
    """Folder with the datasets (default: ``$UNLEARNREC_DATA``, then ``~/.cache/unlearnrec/data``)."""
    backbones: list[ModelName] = Field(default_factory=lambda: ["lightgcn"], min_length=1)
    methods: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"edgedrop": {}, "finetune": {}}, min_length=1)
    """Label -> hyper-parameters (``{}``: defaults). The label is the registered method name (``unlearnrec
    methods``) unless the entry names one with ``method``: ``unlearnrec zero-shot: {method: unlearnrec,
    finetune_epochs: 0}``. Tables, JSON and cell file names use the label."""
    scenarios: list[ScenarioSpec] = Field(
        default_factory=lambda: [ScenarioSpec(kind="random", ratio=0.01)], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Seed of each repetition: the original's training seed (the references add their offsets to it) and the
    request's seed (unless the scenario gives its own)."""
    recipe: RecipeSpec = Field(default_factory=RecipeSpec)
    measures: MeasuresSpec = Field(default_factory=MeasuresSpec)
    out: str = "runs/bench"
    """Results folder (cells/, results.{csv,json,md}, plots/)."""
    cache_dir: str | None = None
    """Trained-model cache (default: ``<out>/cache``); shareable between benchmark runs."""
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)
    """torch threads (default: torch's)."""
    plots: bool = True
    progress: bool | None = None
    """Progress bar over the cells (default: when stderr is a terminal)."""
    fail_fast: bool = False
    """Stop at the first failing cell (default: record the failure and go on; re-running retries it)."""

    _source_dir: Path | None = PrivateAttr(default=None)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> Any:
        if isinstance(v, list):  # a plain list of names: default hyper-parameters
            v = {str(m): {} for m in v}
        if isinstance(v, dict):
            return {k: (x if x is not None else {}) for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _unique(self) -> BenchConfig:
        for field in ("datasets", "backbones", "seeds"):
            values = getattr(self, field)
            dup = sorted({str(x) for x in values if values.count(x) > 1})
            if dup:
                raise ValueError(f"{field} lists {', '.join(dup)} more than once")
        labels = [s.label for s in self.scenarios]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"two scenarios share the label {', '.join(dup)} (give them distinct names)")
        files: dict[str, str] = {}
        for label, params in self.methods.items():
            m = params.get("method", label)
            if not isinstance(m, str) or not m.strip():
                raise ValueError(f"method {label!r}: 'method' must name a registered method, got {m!r}")
            if not label.strip() or label in RESERVED_LABELS or label.startswith(("retrain (", "noise floor")) \
                    or safe_name(label).startswith("_"):
                raise ValueError(f"method label {label!r} is reserved or empty (rows 'original', 'retrain (...)' "
                                 f"and 'noise floor' are the references'; labels must not start with '_')")
            other = files.setdefault(safe_name(label), label)
            if other != label:
                raise ValueError(f"method labels {other!r} and {label!r} map to the same file name "
                                 f"{safe_name(label)!r}; rename one")
        return self

    # ------------------------------------------------------------------ methods
    def method_of(self, label: str) -> str:
        """The registered method a ``methods`` entry runs (its ``method``, else the label itself)."""
        return str(self.methods[label].get("method", label))

    def method_params(self, label: str) -> dict[str, Any]:
        """The hyper-parameters of a ``methods`` entry (without its ``method`` key)."""
        return {k: v for k, v in self.methods[label].items() if k != "method"}

    @classmethod
    def load(cls, path: str | Path) -> BenchConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise BenchConfigError(f"{path}: cannot read the bench config ({exc.strerror or exc})") from None
        import yaml
        from pydantic import ValidationError

        try:
            cfg = cls.from_yaml(text)
        except yaml.YAMLError as exc:
            raise BenchConfigError(f"{path}: not valid YAML ({exc})") from None
        except ValidationError as exc:
            lines = [f"{'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
            raise BenchConfigError(f"{path}: invalid bench config:\n  - " + "\n  - ".join(lines)) from None
        cfg._source_dir = path.resolve().parent
        return cfg

    # ------------------------------------------------------------------ recipe
    def base_path(self) -> Path | None:
        """The recipe's base file, resolved (next to the bench config first, then the working directory)."""
        if self.recipe.base is None:
            return None
        p = Path(self.recipe.base).expanduser()
        if not p.is_absolute() and self._source_dir is not None and (self._source_dir / p).is_file():
            return self._source_dir / p
        return p

    def run_config(self, dataset: str, backbone: str, seed: int, device: str | None = None) -> RunConfig:
        """The resolved training recipe of one ``(dataset, backbone, seed)``."""
        import yaml

        r = self.recipe
        base: dict[str, Any] = {}
        path = self.base_path()
        if path is not None:
            try:
                base = yaml.safe_load(path.read_text()) or {}
            except OSError as exc:
                raise BenchConfigError(f"recipe base {path}: cannot read it ({exc.strerror or exc})") from None
            if not isinstance(base, dict):
                raise BenchConfigError(f"recipe base {path}: not a mapping")
        try:
            cfg = RunConfig.model_validate(_deep_merge(base, r.inline))
            cfg = cfg.with_overrides(dict(r.overrides))
            if r.max_seconds is not None:
                cfg = cfg.with_overrides({"train.max_seconds": r.max_seconds})
            cfg = cfg.with_overrides(dict(r.backbone_overrides.get(backbone, {})))
            grid = {"data.dataset": dataset, "model.name": backbone, "train.seed": int(seed),
                    "train.device": device or self.device}
            if self.data_root is not None:
                grid["data.data_root"] = self.data_root
            return cfg.with_overrides(grid)
        except ValueError as exc:
            raise BenchConfigError(f"recipe for {dataset}/{backbone}: {exc}") from None


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
