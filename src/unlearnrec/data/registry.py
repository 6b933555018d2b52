"""Named datasets: where their files live, how to read them, and where they came from.

A data root holds one folder per dataset (the layout of ``shared/data``). The root is the
explicit argument, else ``$UNLEARNREC_DATA``, else ``~/.cache/unlearnrec/data``. Loading only
reads the root (it may be read-only); parsing is fast enough that nothing is cached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unlearnrec.data.errors import UnknownDatasetError
from unlearnrec.data.formats import read_lightgcn, read_recbole
from unlearnrec.data.interactions import Interactions
from unlearnrec.data.splits import carve_validation
from unlearnrec.data.synthetic import make_synthetic

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "FileSpec",
    "dataset_dir",
    "dataset_info",
    "dataset_recipe",
    "check_files",
    "get_spec",
    "list_datasets",
    "load_dataset",
    "missing_files",
    "register_dataset",
    "resolve_data_root",
]

ENV_DATA = "UNLEARNREC_DATA"
DEFAULT_DATA_ROOT = Path("~/.cache/unlearnrec/data")

_LIGHTGCN_PYTORCH = "https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/947ca2b3b1d2d3545b114145710cb06c4e57b3d2/data"
_RECERASER = "https://raw.githubusercontent.com/chenchongthu/Recommendation-Unlearning/e23f6432a7fd8dd72899dec165ac3a215f8e0bec/data"
_LIGHTGCNPP = "https://raw.githubusercontent.com/geon0325/LightGCNpp/a394f79a7aceb8f485f6bcb549b4865fe83f1d49/data"
_GROUPLENS_100K = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
_RECBOLE_INTER_HEADER = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset and how to check and fetch it.

    Attributes:
        name: path inside the dataset folder.
        sha256: accepted sha256 digests of the file (e.g. the original and a rebuilt, set-identical copy).
        git_blob: git blob sha1 of the original file, for originals known only by their git id.
        size: size in bytes of the copy described in PROVENANCE.md, when known.
        url: canonical public source; ``None`` when the file has none (it is derived or optional).
        archive_member: the file is this member of the zip archive at ``url``.
        prepend: bytes written before the member's content (e.g. a RecBole header).
        required: whether loading the dataset needs this file.
    """

    name: str
    sha256: tuple[str, ...] = ()
    git_blob: str | None = None
    size: int | None = None
    url: str | None = None
    archive_member: str | None = None
    prepend: bytes = b""
    required: bool = True


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: folder, reader, checksummed files, sources, published sizes and citation."""

    name: str
    description: str
    path: str | None
    format: Literal["lightgcn", "recbole", "synthetic"]
    files: tuple[FileSpec, ...] = ()
    splits: dict[str, str] = field(default_factory=dict)  # split -> file name (LightGCN) / {"inter": ...}
    n_users: int | None = None
    n_items: int | None = None
    stats: dict[str, int] = field(default_factory=dict)  # published counts, for listings without parsing
    carve_valid: bool = False
    ratios: tuple[float, ...] = (0.8, 0.1, 0.1)
    rating_threshold: float | None = None
    sources: tuple[str, ...] = ()
    citation: str = ""
    license: str = ""
    derived_from: str | None = None  # built from another registered dataset by download.py
    notes: str = ""
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Measured training recipe per backbone (dotted overrides of :class:`~unlearnrec.config.RunConfig`), the
    default of ``unlearnrec train --dataset NAME --model M`` (as RecBole's dataset property files are); each
    cites the result file it was measured in."""


def _lightgcn_spec(name: str, path: str, base: str | None, files: dict[str, dict], **kw: Any) -> DatasetSpec:
    """A LightGCN-format spec whose files sit under ``base`` (``None``: no public source)."""
    fs = tuple(FileSpec(name=f, url=f"{base}/{f}" if base else None, **meta) for f, meta in files.items())
    splits = {s: f"{s}.txt" for s in ("train", "valid", "test") if f"{s}.txt" in files}
    return DatasetSpec(name=name, path=path, format="lightgcn", files=fs, splits=splits, **kw)


_NGCF = (
    "X. Wang, X. He, M. Wang, F. Feng, T.-S. Chua, Neural Graph Collaborative Filtering, SIGIR 2019; "
    "X. He, K. Deng, X. Wang, Y. Li, Y. Zhang, M. Wang, LightGCN, SIGIR 2020"
)
_ML = "F. M. Harper, J. A. Konstan, The MovieLens Datasets: History and Context, ACM TiiS 5(4), 2015"

DATASETS: dict[str, DatasetSpec] = {}

# benchmarks/configs/ml1m.yaml (batch 8192, d 64, 3 layers, lr 5e-3, reg 1e-3); LightGCN for a fixed 120 epochs
# as the issue-12 grids train it (test recall@20 0.2300, ndcg@20 0.333 in 600-800 s on one core here); the SSL
# backbones with their measured ML-1M settings (benchmarks/results/ml-1m_sgl_vs_lightgcn.md).
_ML1M_BASE = {"model.reg": 1e-3, "train.learning_rate": 5e-3, "train.batch_size": 8192, "train.eval_every": 5}
_ML1M_RECIPES: dict[str, dict[str, Any]] = {
    "lightgcn": {**_ML1M_BASE, "train.epochs": 120, "train.patience": 10},
    "sgl": {**_ML1M_BASE, "train.patience": 10, "model.ssl_weight": 1e-3, "model.ssl_temperature": 0.2,
            "model.ssl_anchors": 1024},
    "simgcl": {**_ML1M_BASE, "train.patience": 10, "model.ssl_weight": 1e-3, "model.ssl_temperature": 0.1,
               "model.noise_eps": 0.1, "model.ssl_anchors": 1024},
}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` (refuses to shadow a name unless ``replace``)."""
    if spec.name in DATASETS and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    DATASETS[spec.name] = spec
    return spec


for _spec in (
    _lightgcn_spec(
        "ml-1m",
        "ml-1m/receraser",
        f"{_RECERASER}/ml-1m",
        {
            "train.txt": dict(
                sha256=("c74ca36cdff687523a151f25ae24a8e93f52906d599e446625a393fdb06443d7",),
                git_blob="6123ca3e485859099373fb1eb98858379c978413",
                size=3_414_577,
            ),
            "test.txt": dict(
                sha256=("0ea4825f0016fffc2b44329ef3617efbf6a3c3ba6e145c48b7a8b46b7313d5c5",),
                git_blob="6b28e45b361b701b0a466570b966a2821fd230b0",
                size=969_993,
            ),
        },
        description="MovieLens-1M, RecEraser split (all ratings positive; the UnlearnRec paper's split)",
        recipes=_ML1M_RECIPES,
        n_users=6040,
        n_items=3706,
        stats={"n_users": 6040, "n_items": 3706, "n_train": 720_152, "n_test": 200_041},
        carve_valid=True,
        sources=("github.com/chenchongthu/Recommendation-Unlearning@e23f6432",),
        citation=f"C. Chen, F. Sun, M. Zhang, B. Ding, Recommendation Unlearning, WWW 2022; {_ML}",
        license="GroupLens terms: research use only, no redistribution",
    ),
    _lightgcn_spec(
        "ml-1m-lightgcnpp",
        "ml-1m/lightgcnpp",
        f"{_LIGHTGCNPP}/ml-1m",
        {
            "train.txt": dict(
                sha256=("dfa3a7a866feade29ca5722ac0423c1b0317ac1f6ad38a55fc1a7ceeb9cee3bb",),
                size=2_499_831,
            ),
            "valid.txt": dict(
                sha256=("429fe0d750b304677898d7eeb1080764bbf06550b94c9508b8cc8cd0573e3dfc",),
                size=367_878,
            ),
            "test.txt": dict(
                sha256=("0d58f78bbf606f401aec2efe3f519b945c458c8398955f986e03b880fbbd16a6",),
                size=718_939,
            ),
        },
        description="MovieLens-1M (ratings >= 3), LightGCN++ train/valid/test split",
        n_users=6039,
        n_items=3628,
        stats={"n_users": 6039, "n_items": 3628, "n_train": 590_733, "n_valid": 80_897, "n_test": 164_848},
        sources=("github.com/geon0325/LightGCNpp@a394f79a",),
        citation=f"G. Lee, K. Kim, K. Shin, Revisiting LightGCN, RecSys 2024; {_ML}",
        license="GroupLens terms: research use only, no redistribution",
    ),
    _lightgcn_spec(
        "gowalla",
        "gowalla",
        f"{_LIGHTGCN_PYTORCH}/gowalla",
        {
            "train.txt": dict(
                # rebuilt (set-identical) copy in shared/data; the original is known by its git blob
                sha256=("0f086326b28a56c2e6dcb81d86ee72d4ccb7eed3a8d26788392356d8f51111cc",),
                git_blob="a27782bd7a1d4d0744148dc0460ea94da74763f2",
                size=4_633_414,
            ),
            "test.txt": dict(
                sha256=("099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",),
                git_blob="9ed5af4b5d21511f33740b4e22e3852f45671800",
                size=1_372_559,
            ),
            "user_list.txt": dict(
                sha256=("5344c4d0deef610e1f148f23ad216a0db03b36f88834cd39a06786a672c5f5a1",),
                size=351_203,
                required=False,
            ),
            "item_list.txt": dict(
                sha256=("6b186f92890cc3f0c15a6dae5d6285f125a302bb8c5ea0cd9a16cf9c16347139",),
                size=506_926,
                required=False,
            ),
        },
        description="Gowalla check-ins, NGCF/LightGCN split (10-core, 80/20 per user)",
        n_users=29_858,
        n_items=40_981,
        stats={"n_users": 29_858, "n_items": 40_981, "n_train": 810_128, "n_test": 217_242},
        carve_valid=True,
        sources=("github.com/gusye1234/LightGCN-PyTorch@947ca2b3",),
        citation=f"E. Cho, S. A. Myers, J. Leskovec, Friendship and Mobility, KDD 2011; {_NGCF}",
        license="SNAP: research use, cite the papers",
    ),
    _lightgcn_spec(
        "yelp2018",
        "yelp2018",
        f"{_LIGHTGCN_PYTORCH}/yelp2018",
        {
            "train.txt": dict(
                sha256=("5588ebbcbf9ab10cdf7a70aa300f2ef781030daa2a94ef0685598ed051a398da",),
                git_blob="cda12361055ba448ae4bd1070f6000c16dea8f22",
                size=6_904_880,
            ),
            "test.txt": dict(
                sha256=("9cd9b37926cd1447a06625ffa7914527573fb097c10cb0bbdb1d1b8ded3742fe",),
                git_blob="30dfbc3437b27b74cb2970b435a5ec93ad9f2468",
                size=1_986_152,
            ),
            "user_list.txt": dict(
                sha256=("4931519d8b3c40d71a34cc386c3287b6d63c1be9a82edd7ee6bfad765e640778",),
                size=907_278,
                required=False,
            ),
            "item_list.txt": dict(
                sha256=("1091bc824b60561906df552f2f7cb3ec61767b1e46fd4386b44400ae49712007",),
                size=1_092_298,
                required=False,
            ),
        },
        description="Yelp2018, NGCF/LightGCN split (10-core, 80/20 per user)",
        n_users=31_668,
        n_items=38_048,
        stats={"n_users": 31_668, "n_items": 38_048, "n_train": 1_237_259, "n_test": 324_147},
        carve_valid=True,
        sources=("github.com/gusye1234/LightGCN-PyTorch@947ca2b3",),
        citation=f"Yelp Dataset Challenge 2018; {_NGCF}",
        license="Yelp Dataset Terms: non-commercial research use, no redistribution",
    ),
    DatasetSpec(
        name="ml-100k",
        description="MovieLens-100K RecBole atomic file; all ratings positive, seeded 80/10/10 per-user split",
        path="ml-100k",
        format="recbole",
        files=(
            FileSpec(
                "ml-100k.inter",
                sha256=("4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",),
                size=1_979_230,
                url=_GROUPLENS_100K,
                archive_member="ml-100k/u.data",
                prepend=_RECBOLE_INTER_HEADER,
            ),
            FileSpec(
                "ml-100k.item",
                sha256=("51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",),
                size=66_632,
                required=False,
            ),
            FileSpec(
                "ml-100k.user",
                sha256=("4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",),
                size=22_697,
                required=False,
            ),
        ),
        splits={"inter": "ml-100k.inter"},
        n_users=943,
        n_items=1682,
        stats={"n_users": 943, "n_items": 1682, "n_interactions": 100_000},
        sources=("recbole==1.2.1 wheel (recbole/dataset_example/ml-100k)", "files.grouplens.org ml-100k.zip (u.data)"),
        citation=_ML,
        license="GroupLens terms: research use only, no redistribution",
        notes="ml-100k.inter is u.data of the GroupLens zip under a RecBole header, byte for byte",
    ),
    _lightgcn_spec(
        "gowalla-tiny",
        "gowalla-tiny",
        None,
        {
            "train.txt": dict(
                sha256=("e8a77b3eb4ba3710616ae40f75ef62af96dc123af4b8d3ade278598d713b22e8",),
                size=18_795,
            ),
            "test.txt": dict(sha256=("aaa9be033f346bf8c73dd29529d6d13eb3b57c13cf1576729ed44918a530abf3",), size=6_970),
            "user_map.txt": dict(
                sha256=("3fab14c6d313d13990e3b43ce30f7b7947af171695f2dfba8183b2cffd51e43f",), size=2_594, required=False
            ),
            "item_map.txt": dict(
                sha256=("639e008182b0c2c28779a54f580a23d204e7df8e1f232c4e5ae16450203e3992",), size=1_872, required=False
            ),
        },
        description="Deterministic 342 x 228 subgraph of Gowalla, for unit tests and CI",
        n_users=342,
        n_items=228,
        stats={"n_users": 342, "n_items": 228, "n_train": 5_217, "n_test": 1_645},
        carve_valid=True,
        derived_from="gowalla",
        sources=("derived from gowalla (top-300 items, users < 1000, 5-core; see PROVENANCE.md)",),
        citation=f"E. Cho, S. A. Myers, J. Leskovec, Friendship and Mobility, KDD 2011; {_NGCF}",
        license="SNAP: research use, cite the papers",
    ),
    DatasetSpec(
        name="synthetic",
        description="Built-in planted-community dataset (600 x 400, 70/10/20 split); no files",
        path=None,
        format="synthetic",
        stats={"n_users": 600, "n_items": 400},
        sources=("unlearnrec.data.synthetic.make_synthetic()",),
    ),
):
    register_dataset(_spec)


# ----------------------------------------------------------------------------- lookup
def dataset_recipe(name: str, model: str) -> dict[str, Any]:
    """The recorded recipe of backbone ``model`` on dataset ``name`` (``{}`` when none was measured)."""
    spec = DATASETS.get(name)
    return dict(spec.recipes.get(model, {})) if spec is not None else {}


def resolve_data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data root: ``explicit`` > ``$UNLEARNREC_DATA`` > ``~/.cache/unlearnrec/data``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_ROOT.expanduser()


def get_spec(name: str | DatasetSpec) -> DatasetSpec:
    """The registered spec of ``name``; :class:`UnknownDatasetError` lists the known names."""
    if isinstance(name, DatasetSpec):
        return name
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        ) from None


def dataset_dir(spec: DatasetSpec, data_root: str | os.PathLike | None = None) -> Path | None:
    """Folder of ``spec`` under the data root (``None`` for built-in datasets)."""
    return None if spec.path is None else resolve_data_root(data_root) / spec.path


def missing_files(spec: DatasetSpec, data_root: str | os.PathLike | None = None) -> list[Path]:
    """Required files of ``spec`` that are not under the data root."""
    folder = dataset_dir(spec, data_root)
    if folder is None:
        return []
    return [folder / f.name for f in spec.files if f.required and not (folder / f.name).is_file()]


def _require(spec: DatasetSpec, data_root: str | os.PathLike | None) -> Path:
    folder = dataset_dir(spec, data_root)
    assert folder is not None
    missing = missing_files(spec, data_root)
    if missing:
        raise FileNotFoundError(
            f"dataset {spec.name!r} is not under the data root {resolve_data_root(data_root)}: "
            f"looked for {', '.join(str(p) for p in missing)}. "
            f"Fetch it with `unlearnrec data download {spec.name}`, or point to a folder that has it "
            f"with --data-root or the {ENV_DATA} environment variable."
        )
    return folder


# ----------------------------------------------------------------------------- cheap verification
ENV_CACHE = "UNLEARNREC_CACHE"


def _verified_cache() -> Path:
    return Path(os.environ.get(ENV_CACHE) or "~/.cache/unlearnrec").expanduser() / "verified.json"


def check_files(spec: DatasetSpec, folder: Path) -> list[str]:
    """Warn (:class:`~unlearnrec.data.errors.DataWarning`) for each present file of ``spec`` whose size or
    checksum is not the registered copy's (e.g. truncated); returns the warnings. Sizes are checked on every
    load; a checksum once per file version (path, size, mtime), remembered in ``$UNLEARNREC_CACHE/verified.json``
    (default ``~/.cache/unlearnrec``), so a load costs one ``stat`` per file."""
    import json
    import warnings

    from unlearnrec.data.errors import DataWarning

    cache_path = _verified_cache()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    problems, changed = [], False
    for f in spec.files:
        p = folder / f.name
        if not p.is_file():
            continue
        st = p.stat()
        if f.size is not None and st.st_size != f.size:
            problems.append(f"{p}: {st.st_size} bytes, but the registered copy of {spec.name} has {f.size} "
                            f"(truncated or another version? compare with its PROVENANCE.md, or re-fetch it with "
                            f"`unlearnrec data download {spec.name} --force`)")
            continue
        if not f.sha256 and not f.git_blob:
            continue
        key = str(p.resolve())
        stamp = [st.st_size, st.st_mtime_ns]
        entry = cache.get(key)
        if entry is None or entry.get("stamp") != stamp:
            from unlearnrec.data.download import verify_file

            entry = {"stamp": stamp, "ok": bool(verify_file(f, p))}
            cache[key], changed = entry, True
        if not entry["ok"]:
            problems.append(f"{p}: its checksum is not the registered copy's of {spec.name} (another version or "
                            f"edited?); results may not match the published numbers")
    if changed:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(cache))
            tmp.replace(cache_path)
        except OSError:
            pass  # a read-only home: verify again next time
    for msg in problems:
        warnings.warn(DataWarning(msg), stacklevel=3)
    return problems


# ----------------------------------------------------------------------------- loading
def load_dataset(
    name: str | DatasetSpec,
    data_root: str | os.PathLike | None = None,
    *,
    valid_fraction: float = 0.1,
    seed: int = 2024,
) -> Interactions:
    """Load a registered dataset as :class:`Interactions` with a validation split.

    Published train/test splits without validation get ``valid_fraction`` of each user's
    training pairs carved out (seeded); single-file datasets are split per user with the
    spec's ratios and ``seed``. ``synthetic`` needs no files and ignores ``data_root``/``seed``.
    """
    spec = get_spec(name)
    if spec.format == "synthetic":
        return make_synthetic(name=spec.name)
    folder = _require(spec, data_root)
    check_files(spec, folder)
    if spec.format == "lightgcn":
        inter = read_lightgcn(
            folder / spec.splits["train"],
            folder / spec.splits["test"],
            folder / spec.splits["valid"] if "valid" in spec.splits else None,
            name=spec.name,
            n_users=spec.n_users,
            n_items=spec.n_items,
        )
    elif spec.format == "recbole":
        inter = read_recbole(
            folder / spec.splits["inter"],
            name=spec.name,
            rating_threshold=spec.rating_threshold,
            ratios=spec.ratios,
            seed=seed,
            n_users=spec.n_users if spec.rating_threshold is None else None,
            n_items=spec.n_items if spec.rating_threshold is None else None,
        )
    else:  # pragma: no cover - guarded by the Literal
        raise ValueError(f"unknown format {spec.format!r}")
    if spec.carve_valid and len(inter.valid) == 0 and valid_fraction > 0:
        inter = carve_validation(inter, valid_fraction, seed=seed)
    return inter


def _file_rows(spec: DatasetSpec, folder: Path | None, verify: bool) -> list[dict]:
    if verify:
        from unlearnrec.data.download import verify_file  # download imports this module
    rows = []
    for f in spec.files:
        p = folder / f.name if folder is not None else None
        exists = bool(p is not None and p.is_file())
        rows.append(
            {
                "name": f.name,
                "path": str(p) if p is not None else None,
                "exists": exists,
                "bytes": p.stat().st_size if exists else None,
                "expected_bytes": f.size,
                "sha256": list(f.sha256),
                "git_blob": f.git_blob,
                "url": f.url,
                "required": f.required,
            }
        )
        if verify:
            rows[-1]["valid"] = verify_file(f, p) if exists else None
    return rows


def list_datasets(data_root: str | os.PathLike | None = None) -> list[dict]:
    """One row per registered dataset: name, present, path, description and published sizes."""
    out = []
    for spec in DATASETS.values():
        folder = dataset_dir(spec, data_root)
        out.append(
            {
                "name": spec.name,
                "present": not missing_files(spec, data_root),
                "path": str(folder) if folder is not None else None,
                "format": spec.format,
                "description": spec.description,
                **spec.stats,
            }
        )
    return out


def dataset_info(
    name: str | DatasetSpec, data_root: str | os.PathLike | None = None, *, verify: bool = False
) -> dict:
    """Everything known about one dataset without parsing it: files, sources, sizes, citation.

    With ``verify`` each present file's checksum is checked too (``files[k]["valid"]``).
    """
    spec = get_spec(name)
    folder = dataset_dir(spec, data_root)
    return {
        "name": spec.name,
        "description": spec.description,
        "format": spec.format,
        "present": not missing_files(spec, data_root),
        "path": str(folder) if folder is not None else None,
        "files": _file_rows(spec, folder, verify),
        "stats": dict(spec.stats),
        "validation": (
            "shipped"
            if "valid" in spec.splits or spec.format == "synthetic"
            else "carved from train (per user, seeded)"
            if spec.carve_valid
            else f"per-user split {spec.ratios}"
        ),
        "rating_threshold": spec.rating_threshold,
        "sources": list(spec.sources),
        "derived_from": spec.derived_from,
        "citation": spec.citation,
        "license": spec.license,
        "notes": spec.notes,
        "recipes": {k: dict(v) for k, v in spec.recipes.items()},
    }
