"""The evaluation harness behind ``unlearnrec bench --config FILE``: a resumable grid of datasets × backbones ×
methods × scenarios × seeds with a trained-model cache, tables (CSV, JSON, Markdown) and figures.

>>> from unlearnrec.bench import BenchConfig, run_bench
>>> result = run_bench(BenchConfig.load("benchmarks/configs/bench_synthetic.yaml"))  # doctest: +SKIP
>>> print(result.table)  # doctest: +SKIP
"""

from unlearnrec.bench.config import (
    BenchConfig,
    BenchConfigError,
    MeasuresSpec,
    MembershipSpec,
    QuantizationSpec,
    RecipeSpec,
    RelearningSpec,
    ScenarioSpec,
)
from unlearnrec.bench.grid import (
    BenchResult,
    BenchRunner,
    Cell,
    ModelCache,
    Plan,
    run_bench,
    validate_config,
)

__all__ = [
    "BenchConfig",
    "BenchConfigError",
    "BenchResult",
    "BenchRunner",
    "Cell",
    "MeasuresSpec",
    "MembershipSpec",
    "ModelCache",
    "Plan",
    "QuantizationSpec",
    "RecipeSpec",
    "RelearningSpec",
    "ScenarioSpec",
    "run_bench",
    "validate_config",
]
