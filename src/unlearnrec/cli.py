"""The ``unlearnrec`` command line: every command prints a readable table and writes a JSON result."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

import typer
from pydantic import ValidationError

from unlearnrec.config import DataConfig, DataSource, ModelConfig, RunConfig
from unlearnrec.report import format_table, metrics_rows

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="List, describe and download the registered datasets.")
app.add_typer(data_app, name="data")


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _fail(message: str) -> None:
    typer.secho(f"error: {_one_line(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def _warnings_shown():
    """Show warnings raised while a command runs as one ``warning:`` line each on stderr (no source lines)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = _one_line(str(w.message))
                if text not in seen and not issubclass(w.category, DeprecationWarning):
                    seen.add(text)
                    typer.secho(f"warning: {text}", fg=typer.colors.YELLOW, err=True)


def _validation_message(source: Path, exc: ValidationError) -> str:
    return f"{source}: " + "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'top level'}: {e['msg']}"
                                     for e in exc.errors())


def _deep_merge(base: dict, top: dict) -> dict:
    """``base`` with ``top``'s values, section by section."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _data_source(data: Path, fmt: str, sep: str | None, header: bool | None, columns: str | None,
                 id_base: int, rating_threshold: float | None, split: str, ratios: str | None,
                 drop_duplicates: bool) -> dict:
    cols = None
    if columns is not None:
        cols = [c.strip() or None for c in columns.split(",")]
        cols = [int(c) if c is not None and c.isdigit() else c for c in cols]
    source = {"path": str(data), "format": fmt, "sep": {"\\t": "\t", "tab": "\t"}.get(sep, sep),
              "header": "auto" if header is None else header, "columns": cols, "id_base": id_base,
              "rating_threshold": rating_threshold, "split": split, "drop_duplicates": drop_duplicates}
    if ratios is not None:
        try:
            source["ratios"] = [float(x) for x in ratios.split(",")]
        except ValueError:
            raise ValueError(f"--ratios {ratios!r}: expected train,valid,test shares such as 0.8,0.1,0.1") from None
    try:
        DataSource.model_validate(source)
    except ValidationError as exc:
        raise ValueError("data options: " + "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
    return source


def _build_config(
    config: Path | None, dataset: str | None, model: str | None, data_root: str | None,
    device: str | None, overrides: list[str], source: dict | None = None,
) -> RunConfig:
    """defaults < the dataset's recorded recipe < config file < explicit options < key=value overrides."""
    from unlearnrec.data.registry import DATASETS

    if dataset and dataset not in DATASETS and Path(dataset).expanduser().exists():
        raise ValueError(f"--dataset takes a registered name (`unlearnrec data list`); {dataset} is a path: "
                         f"use --data {dataset} for your own files")
    from unlearnrec.data.registry import dataset_recipe

    file_values = _read_mapping(config, "settings") if config else {}
    ds = dataset or (file_values.get("data") or {}).get("dataset") or DataConfig().dataset
    mdl = model or (file_values.get("model") or {}).get("name") or ModelConfig().name
    recipe = {} if source is not None else dataset_recipe(ds, mdl)
    base = RunConfig().with_overrides(recipe).model_dump(mode="json")
    try:
        cfg = RunConfig.model_validate(_deep_merge(base, file_values))
    except ValidationError as exc:
        raise ValueError(_validation_message(config, exc)) from None
    if recipe:
        typer.echo(f"recipe: the recorded {mdl} recipe for {ds}: " + " ".join(f"{k}={v}" for k, v in recipe.items())
                   + " (a config file or key=value overrides take precedence)", err=True)
    explicit: dict = {}
    if source is not None:
        if dataset:
            raise ValueError("give --dataset (a registered dataset) or --data (your files), not both")
        explicit["data.source"] = source
        explicit["data.dataset"] = Path(source["path"]).name.split(".")[0] or "data"
    if dataset:
        explicit["data.dataset"] = dataset
    if model:
        explicit["model.name"] = model
    if data_root:
        explicit["data.data_root"] = data_root
    if device:
        explicit["train.device"] = device
    cfg = cfg.with_overrides(explicit)
    return cfg.with_overrides(overrides or [])


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Checkpoint directory to write."),
    dataset: str | None = typer.Option(None, help="Registered dataset name (see `unlearnrec data list`)."),
    data: Path | None = typer.Option(None, "--data", help="Your own interactions: one file (split per user "
                                     "here) or a folder with train and test files (used as they are)."),
    fmt: str = typer.Option("auto", "--format", help="--data format: csv, tsv, lightgcn, recbole or auto "
                            "(from the file names)."),
    sep: str | None = typer.Option(None, "--sep", help="csv/tsv separator (default , or tab; 'whitespace')."),
    header: bool | None = typer.Option(None, "--header/--no-header", help="Whether the first row names the "
                                       "columns (default: detected)."),
    columns: str | None = typer.Option(None, "--columns", help="user,item[,rating[,timestamp]] columns by "
                                       "header name or 0-based position, e.g. userId,movieId,rating,timestamp."),
    id_base: int = typer.Option(0, "--id-base", help="lightgcn files: the smallest id (1 if numbered from 1)."),
    rating_threshold: float | None = typer.Option(None, "--rating-threshold", help="Keep rows with rating >= "
                                                  "this as interactions (needs a rating column)."),
    split: str = typer.Option("auto", "--split", help="files (the folder's own splits), random (per user, "
                              "seeded by data.split_seed) or temporal (per user by time, latest as test)."),
    ratios: str | None = typer.Option(None, "--ratios", help="train,valid,test shares of a random or temporal "
                                      "split (default 0.8,0.1,0.1)."),
    drop_duplicates: bool = typer.Option(False, "--drop-duplicates", help="Keep the first of repeated pairs "
                                         "instead of refusing the file."),
    model: str | None = typer.Option(None, help="Backbone: mf, lightgcn, sgl or simgcl."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    data_root: str | None = typer.Option(None, help="Folder with the datasets (default: $UNLEARNREC_DATA)."),
    device: str | None = typer.Option(None, help="cpu (default), cuda, cuda:N or auto."),
    resume: bool = typer.Option(False, help="Continue the run whose checkpoint is in --out (its config and "
                                "data unless others are given)."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds (kept until the new checkpoint "
                               "is complete)."),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: if a terminal; else a line per evaluation)."
    ),
    nproc: int = typer.Option(1, "--nproc", help="Data-parallel ranks on this machine (torch.distributed: gloo on "
                              "CPU, NCCL with one GPU per rank); under torchrun its group is used instead."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. train.learning_rate=0.005"),
) -> None:
    """Train a backbone with early stopping on validation, then report test metrics of the best epoch."""
    from unlearnrec.checkpoint import CheckpointError
    from unlearnrec.distributed import DistributedError
    from unlearnrec.training import run_data_parallel, under_torchrun

    bar = sys.stderr.isatty() if progress is None else progress
    try:
        source = None if data is None else _data_source(data, fmt, sep, header, columns, id_base,
                                                         rating_threshold, split, ratios, drop_duplicates)
        if resume and not (config or dataset or data or model):  # continue the checkpoint's own run
            from unlearnrec.checkpoint import load_checkpoint

            cfg = load_checkpoint(out).config.with_overrides({"train.device": device} if device else {})
            cfg = cfg.with_overrides(overrides or [])
        else:
            cfg = _build_config(config, dataset, model, data_root, device, overrides or [], source)
        if nproc < 1:
            raise ValueError(f"--nproc must be at least 1, got {nproc}")
        with _warnings_shown():
            result = run_data_parallel(cfg, out, nproc, progress=bar, resume=resume, force=force,
                                       callbacks=None if bar else [_Heartbeat(cfg.train.epochs, cfg.train.monitor)])
    except DistributedError as exc:  # the failing rank's first line (its traceback stays out of the message)
        _fail(str(exc).splitlines()[0])
    except (CheckpointError, ValueError, KeyError, OSError) as exc:
        _fail(str(exc))
    if under_torchrun() and result.get("distributed", {}).get("rank", 0) != 0:
        return  # rank 0 reports
    tr = result["training"]
    cfg = RunConfig.model_validate(result["config"])
    typer.echo(
        format_table(
            metrics_rows(result["test"]),
            title=f"{cfg.model.name} on {cfg.data.dataset}: test metrics at best validation epoch "
            f"{tr['best_epoch']} ({tr['epochs_run']} epochs, {tr['train_seconds']:.1f} s; stopped: "
            f"{_stop_text(tr, cfg)})",
        )
    )
    typer.echo(f"checkpoint: {out}   result: {out / 'result.json'}")


def _stop_text(tr: dict, cfg: RunConfig) -> str:
    reason = tr.get("stop_reason", "epoch limit")
    if reason == "early stop":
        return f"early stop, no validation gain in {cfg.train.patience} evaluations"
    if reason == "time budget":
        return f"time budget of {cfg.train.max_seconds:g} s reached"
    if reason == "epoch limit":
        return f"epoch limit {cfg.train.epochs}"
    return reason


class _Heartbeat:
    """One stderr line per validation (epoch, loss, the monitored metric, elapsed) when there is no bar; a
    picklable callback, so that a spawned rank 0 can run it."""

    def __init__(self, epochs: int, monitor: str):
        import time

        self.epochs, self.monitor, self.start = epochs, monitor, time.time()

    def __call__(self, epoch: int, record: dict, trainer) -> None:
        import time

        if "valid" in record:
            m = self.monitor
            typer.echo(f"epoch {epoch}/{self.epochs}  loss {record.get('loss', float('nan')):.4f}  valid {m} "
                       f"{record['valid'].get(m, float('nan')):.4f} (best epoch {trainer.state.best_epoch})  "
                       f"{time.time() - self.start:.0f} s", err=True)


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory."),
    split: str = typer.Option("test", help="test or valid."),
    out: Path | None = typer.Option(None, help="Where to write evaluation-<split>.json (default: the checkpoint)."),
    data_root: str | None = typer.Option(None, help="Folder with the datasets."),
    device: str = typer.Option("cpu", help="cpu (default), cuda or auto."),
) -> None:
    """Full-ranking Recall/NDCG/Precision/HitRate of a checkpoint (training items masked)."""
    from unlearnrec import api
    from unlearnrec.checkpoint import CheckpointError

    try:
        with _warnings_shown():
            result = api.evaluate(checkpoint, data_root=data_root, split=split, out=out, device=device)
    except (CheckpointError, ValueError, KeyError, OSError) as exc:
        _fail(str(exc))
    typer.echo(format_table(metrics_rows(result["metrics"]), title=f"{checkpoint} on {split}"))


@data_app.command("list")
def data_list(data_root: str | None = typer.Option(None, help="Folder with the datasets.")) -> None:
    """Show the registered datasets and which are present under the data root."""
    from unlearnrec.data.registry import list_datasets, resolve_data_root

    rows = []
    for r in list_datasets(data_root):
        n = r.get("n_interactions") or sum(r.get(k) or 0 for k in ("n_train", "n_valid", "n_test")) or None
        rows.append({"name": r["name"], "present": r["present"], "users": r.get("n_users"), "items": r.get("n_items"),
                     "interactions": n, "description": r["description"]})
    typer.echo(format_table(rows, title=f"data root: {resolve_data_root(data_root)}"))


@data_app.command("info")
def data_info(
    name: str = typer.Argument(..., help="Dataset name."),
    data_root: str | None = typer.Option(None, help="Folder with the datasets."),
    verify: bool = typer.Option(False, help="Check every present file's checksum."),
    load: bool = typer.Option(False, help="Also parse it and print split sizes and its fingerprint."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON instead of tables."),
) -> None:
    """Files, sources, checksums, sizes and the recorded training recipes of one dataset."""
    from unlearnrec.data.errors import UnknownDatasetError
    from unlearnrec.data.registry import dataset_info, load_dataset

    try:
        info = dataset_info(name, data_root, verify=verify)
        if load:
            d = load_dataset(name, data_root)
            info["loaded"] = {**d.stats(), "fingerprint": d.fingerprint()}
    except (UnknownDatasetError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    about = [{"field": k, "value": v} for k, v in info.items()
             if k not in ("files", "stats", "loaded", "recipes") and v not in (None, "", [], {})]
    about += [{"field": f"published {k}", "value": v} for k, v in info.get("stats", {}).items()]
    about += [{"field": f"loaded {k}", "value": v} for k, v in info.get("loaded", {}).items()]
    typer.echo(format_table(about, title=f"dataset {info['name']}"))
    files = [{k: v for k, v in f.items() if k in ("name", "exists", "bytes", "expected_bytes", "valid", "url")}
             for f in info["files"]]
    if files:
        typer.echo(format_table(files, title="files"))
    recipes = [{"backbone": b, "recipe": " ".join(f"{k}={v}" for k, v in r.items())}
               for b, r in info.get("recipes", {}).items()]
    if recipes:
        typer.echo(format_table(recipes, title="recorded recipes (the default of `train --dataset NAME --model M`)"))


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="Dataset name."),
    data_root: str | None = typer.Option(None, help="Folder to download into."),
    base_url: str | None = typer.Option(None, help="Mirror laid out like a data root (default: canonical sources)."),
    force: bool = typer.Option(False, help="Replace present files that fail their checksum."),
) -> None:
    """Download a dataset from its canonical public source, verify its checksums, write atomically."""
    from unlearnrec.data.download import download_dataset
    from unlearnrec.data.errors import UnknownDatasetError

    try:
        results = download_dataset(name, data_root, base_urls=base_url, force=force, progress=sys.stderr.isatty())
    except (UnknownDatasetError, OSError, ValueError) as exc:
        _fail(str(exc))
    rows = [{"file": r.name, "status": r.status, "source": r.source, "path": str(r.path)} for r in results]
    typer.echo(format_table(rows, title=f"{name}"))


@app.command("pretrain-unlearner")
def pretrain_unlearner(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Trained backbone checkpoint."),
    out: Path = typer.Option(..., "--out", help="Encoder directory to write."),
    config: Path | None = typer.Option(None, "--config", "-c", help="UnlearnRec YAML config."),
    variant: str | None = typer.Option(
        None, "--variant", help="paper (`unlearnrec`, default) or calibrated (`unlearnrec-calibrated`); "
        "default: the config file's `variant`, else paper."),
    data_root: str | None = typer.Option(None, help="Folder with the datasets."),
    device: str | None = typer.Option(None, help="cpu (default), cuda or auto."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress"),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides of the UnlearnRec config"),
) -> None:
    """Pre-train the UnlearnRec Influence Encoder on simulated deletion requests (one-off cost)."""
    from unlearnrec import api
    from unlearnrec.checkpoint import CheckpointError
    from unlearnrec.unlearning.unlearnrec import config_for

    try:
        values = {}
        if config:
            values = _read_mapping(config, "UnlearnRec hyper-parameters")
        try:
            cfg = config_for(variant or values.get("variant", "paper"), values)
        except ValidationError as exc:
            raise ValueError(_validation_message(config, exc)) from None
        cfg = cfg.with_overrides({"device": device} if device else {})
        cfg = cfg.with_overrides(overrides or [])
        bar = sys.stderr.isatty() if progress is None else progress
        with _warnings_shown():
            result = api.pretrain_unlearner(checkpoint, out, config=cfg, data_root=data_root, progress=bar,
                                            force=force, log=None if bar else lambda m: typer.echo(m, err=True))
    except (CheckpointError, ValueError, KeyError, OSError) as exc:
        _fail(str(exc))
    rep = result["report"]
    sel = rep.get("selection", {}).get("requests", [])
    rows = []
    for i, (ref, before) in enumerate(zip(rep.get("reference", []), rep.get("before", []), strict=False)):
        m = sel[i] if i < len(sel) else {}
        for name, x in ((f"original (request {i + 1} kept)", ref), (f"EdgeDrop (request {i + 1})", before),
                        (f"encoder, epoch {rep.get('selected_epoch')} (request {i + 1})", m)):
            rows.append({"model": name, "valid recall@20": x.get("recall@20"),
                         "request score": x.get("request_score"), "non-edge score": x.get("nonedge_score"),
                         "auc excess": x.get("auc_excess")})
    cal = rep.get("calibration")
    extra = f"; withdraw gain {cal['gain']:.4g} (calibrated to the retrain proxy)" if cal else ""
    typer.echo(f"{result['method']} pre-training: {result['pretrain_seconds']:.1f} s (one-off){extra}; encoder: {out}")
    typer.echo(format_table(rows, title="held-out simulated requests (selection only; the evaluation request is "
                                        "never seen)"))
    if rep.get("warning"):
        typer.echo(f"WARNING: {rep['warning']}", err=True)


@app.command()
def unlearn(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Trained backbone checkpoint."),
    out: Path = typer.Option(..., "--out", help="Directory for the unlearned model and result.json."),
    method: str = typer.Option("unlearnrec", "--method", help="Unlearning method (see `unlearnrec methods`)."),
    encoder: Path | None = typer.Option(None, "--encoder", help="Encoder from `pretrain-unlearner` (unlearnrec)."),
    method_config: Path | None = typer.Option(None, "--method-config", help="YAML of the method's hyper-parameters."),
    request: Path | None = typer.Option(None, "--request", help="CSV of raw (user, item) ids to forget."),
    random_edges: float | None = typer.Option(None, "--random-edges", help="Forget this random fraction of edges."),
    users: str | None = typer.Option(None, "--users", help="Comma-separated raw user ids to forget entirely."),
    items: str | None = typer.Option(None, "--items", help="Comma-separated raw item ids to forget entirely."),
    seed: int = typer.Option(0, help="Seed of --random-edges."),
    finetune_epochs: int | None = typer.Option(None, "--finetune-epochs", help="k fine-tuning epochs (0 = zero-shot)."),
    data_root: str | None = typer.Option(None, help="Folder with the datasets."),
    device: str = typer.Option("cpu", help="cpu (default), cuda or auto."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress"),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Unlearn a deletion request (default UnlearnRec: encoder pass plus k fine-tuning epochs)."""
    from unlearnrec import api
    from unlearnrec.checkpoint import CheckpointError

    def split(s: str | None, option: str) -> list[str] | None:
        if s is None:
            return None
        ids = [x.strip() for x in s.split(",") if x.strip()]
        if not ids:
            raise ValueError(f"{option} is empty: give comma-separated raw ids, e.g. {option} 12,40")
        repeated = sorted({x for x in ids if ids.count(x) > 1})
        if repeated:
            typer.secho(f"note: {option} repeats {', '.join(repeated)} (each is forgotten once)", err=True)
        return list(dict.fromkeys(ids))

    try:
        mcfg = _read_mapping(method_config, "hyper-parameters") if method_config else None
        with _warnings_shown():
            result = api.unlearn(checkpoint, encoder, out, method=method, method_config=mcfg,
                                 finetune_epochs=finetune_epochs, data_root=data_root,
                                 device=device, progress=progress, request_file=request, random_edges=random_edges,
                                 users=split(users, "--users"), items=split(items, "--items"), seed=seed, force=force)
    except ValidationError as exc:
        _fail(_validation_message(method_config or Path(f"{method} hyper-parameters"), exc))
    except (CheckpointError, ValueError, KeyError, OSError) as exc:
        _fail(str(exc))
    f, t = result["forgetting"], result["timings"]
    rows = [
        {"model": "before", "recall@20": result["utility_before"]["recall@20"],
         "ndcg@20": result["utility_before"]["ndcg@20"],
         "request score": f["score"]["request"]["before"]["mean"],
         "non-edge score": f["score"]["non_edges"]["before"]["mean"],
         "request rank pct": f["rank"]["before"]["mean_percentile"], "MI-NG": f.get("mi_ng_before"), "seconds": None},
        {"model": "unlearned", "recall@20": result["utility_after"]["recall@20"],
         "ndcg@20": result["utility_after"]["ndcg@20"],
         "request score": f["score"]["request"]["after"]["mean"],
         "non-edge score": f["score"]["non_edges"]["after"]["mean"],
         "request rank pct": f["rank"]["after"]["mean_percentile"], "MI-NG": f["mi_ng"], "seconds": t["total_seconds"]},
    ]
    title = (f"{method}: unlearned {result['request']['n_edges']} edges ({result['request']['kind']}); "
             f"MI-BF {f['mi_bf']:.3f}; one-off {t['prepare_seconds']:.2f} s")
    typer.echo(format_table(rows, title=title))
    saved = f"unlearned model: {out}"
    typer.echo(f"{saved}   result: {out / 'result.json'}")


def _read_mapping(path: Path, what: str) -> dict:
    """A YAML mapping from ``path`` (one-line errors naming the file)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of {what}, found {type(raw).__name__}")
    return raw


@app.command()
def recommend(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory (trained or unlearned)."),
    user: list[str] | None = typer.Option(None, "--user", help="Raw user id (repeat for several)."),
    users_file: Path | None = typer.Option(None, "--users-file", help="File of raw user ids, one a line."),
    k: int = typer.Option(20, "-k", "--k", help="How many items per user."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    data_root: str | None = typer.Option(None, help="Folder with the datasets (registered datasets only)."),
    device: str = typer.Option("cpu", help="cpu (default), cuda or auto."),
) -> None:
    """Top-k items (raw ids, with scores) for users, leaving out what each has in the model's training graph."""
    from unlearnrec import api
    from unlearnrec.checkpoint import CheckpointError

    try:
        ids = list(user or [])
        if users_file is not None:
            try:
                lines = users_file.read_text(encoding="utf-8-sig").splitlines()
            except OSError as exc:
                raise ValueError(f"{users_file}: cannot read ({exc.strerror or exc})") from None
            ids += [ln.split(",")[0].strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not ids:
            raise ValueError("give --user RAW_ID (repeatable) or --users-file FILE")
        result = api.recommend(checkpoint, ids, k=k, data_root=data_root, device=device)
    except (CheckpointError, ValueError, KeyError, OSError) as exc:
        _fail(str(exc).strip("'\""))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    rows = [{"user": r["user"], "rank": j + 1, "item": item, "score": score}
            for r in result["recommendations"] for j, (item, score) in enumerate(zip(r["items"], r["scores"],
                                                                                     strict=True))]
    typer.echo(format_table(rows, title=f"{result['model']} on {result['dataset']}: top {k} (seen items left out)"))


@app.command()
def serve(
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Trained model to serve."),
    encoder: Path | None = typer.Option(None, "--encoder", help="UnlearnRec encoder of the checkpoint (default "
                                        "method UnlearnRec zero-shot; without it EdgeDrop)."),
    method: str | None = typer.Option(None, "--method", help="Unlearning method of the applier."),
    store: Path | None = typer.Option(None, "--store", help="Ledger and model versions (default: "
                                      "<checkpoint>-service)."),
    db: str | None = typer.Option(None, "--db", help="Keep the ledger in PostgreSQL: a postgresql://user@host:port/"
                                  "dbname URL (password from $PGPASSWORD or ~/.pgpass, not the command line); "
                                  "default SQLite in --store."),
    tokens: Path | None = typer.Option(None, "--tokens", help="JSON {token_id: {sha256, scopes}} of the bearer "
                                       "tokens (digests only)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    demo: bool = typer.Option(False, "--demo", help="Train a model on the built-in data, make demo tokens, "
                              "serve it."),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="Largest request body accepted (413 "
                                       "beyond)."),
    deadline_days: float = typer.Option(30.0, "--deadline-days", help="Legal deadline from receipt to completion "
                                        "(GDPR: one month; CCPA: 45 days)."),
    alert_days: float = typer.Option(7.0, "--alert-days", help="Alert, and settle, when an open request is this "
                                     "close to its deadline."),
    settle_every: float | None = typer.Option(None, "--settle-every", help="Seconds between scheduled settlements "
                                              "(exact retrains) while requests are open; default: on alert or "
                                              "admin demand."),
    retention_days: float = typer.Option(7.0, "--retention-days", help="Keep superseded model versions this long "
                                         "after a settlement."),
    settle_epochs: int | None = typer.Option(None, "--settle-epochs", help="Epochs of a settlement's retrain "
                                             "(default: the model's recipe)."),
    guard_drop: float = typer.Option(0.01, "--guard-drop", help="Least canary Recall@20 drop that sends a batch to "
                                     "the exact retrain instead (raised by the start-up calibration)."),
    batch_wait: float = typer.Option(0.05, "--batch-wait", help="Seconds the applier lets a micro-batch "
                                     "gather."),
    quota: str = typer.Option("600/minute", "--quota", help="Deletion requests per token (limits notation, e.g. "
                              "'60/minute'); 429 with Retry-After beyond."),
    max_pending: int = typer.Option(1_000_000, "--max-pending", help="Interactions waiting to be unlearned at "
                                    "which new deletions get 503 with Retry-After."),
) -> None:
    """Run the deletion service: take erasure requests, hide them at once, unlearn them, serve recommendations.

    The audit key of the ledger's digests comes from $UNLEARNREC_AUDIT_KEY (at least 16 bytes)."""
    import secrets

    try:
        import uvicorn

        from unlearnrec.service.app import DeletionService, create_app, load_tokens, token_digest
        from unlearnrec.service.ledger import LedgerError, is_url
    except ImportError as exc:
        _fail(f"the service needs its extra: pip install 'unlearnrec[service]' ({exc})")
    key = os.environ.get("UNLEARNREC_AUDIT_KEY", "")
    try:
        if demo:
            from unlearnrec import api

            root = store or Path("runs/serve-demo")
            checkpoint = root / "model"
            if not (checkpoint / "meta.json").is_file():
                cfg = RunConfig().with_overrides({"train.epochs": 20, "model.embedding_size": 32})
                api.train(cfg, checkpoint, progress=False)
            store = root / "store"
            made = {name: secrets.token_urlsafe(24) for name in SCOPE_TOKENS}
            tok_file = root / "tokens.json"
            tok_file.parent.mkdir(parents=True, exist_ok=True)
            tok_file.write_text(json.dumps({n: {"sha256": token_digest(t), "scopes": SCOPE_TOKENS[n]}
                                            for n, t in made.items()}))
            tokens = tok_file
            key = key or secrets.token_hex(16)
            for n, t in made.items():
                typer.echo(f"demo token {n} ({', '.join(SCOPE_TOKENS[n])}): {t}")
        if checkpoint is None or tokens is None:
            raise ValueError("give --checkpoint and --tokens (or --demo)")
        if len(key.encode()) < 16:
            raise ValueError("set UNLEARNREC_AUDIT_KEY to a secret of at least 16 bytes (the ledger's digest key)")
        if db is not None and not is_url(db):
            raise ValueError(f"--db takes a postgresql:// URL, not {db!r} (the SQLite ledger lives in --store)")
        service = DeletionService(checkpoint, store or Path(f"{checkpoint}-service"), audit_key=key.encode(),
                                  tokens=load_tokens(tokens), encoder=encoder, method=method,
                                  batch_wait_s=batch_wait, db=db,
                                  settle={"deadline_s": deadline_days * 86_400, "alert_margin_s": alert_days * 86_400,
                                          "every_s": settle_every, "retention_s": retention_days * 86_400,
                                          "epochs": settle_epochs, "tick_s": min(60.0, settle_every or 60.0)},
                                  guard={"floor": guard_drop})
    except (ValueError, KeyError, OSError, LedgerError) as exc:
        _fail(str(exc))
    typer.echo(f"serving {checkpoint} (version {service.handle.version}, method {service.method}) on "
               f"http://{host}:{port}  ledger: {service.ledger.path}", err=True)
    try:
        app = create_app(service, max_body_bytes=max_body_bytes, quota=quota, max_pending=max_pending)
    except ValueError as exc:  # a malformed --quota
        _fail(f"--quota {quota!r}: {exc}")
    uvicorn.run(app, host=host, port=port, log_level="warning")


SCOPE_TOKENS = {"deleter": ["deleter"], "reader": ["reader"], "admin": ["deleter", "reader", "admin"]}


@app.command()
def methods() -> None:
    """List the unlearning methods (``--method NAME``) with their papers and the backbones they support."""
    from unlearnrec.unlearning.base import list_unlearners

    typer.echo(format_table(list_unlearners(), title="unlearning methods"))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output directory."),
    device: str = typer.Option("cpu", help="cpu (default), cuda or auto."),
) -> None:
    """The whole story on built-in synthetic data (no files needed)."""
    from unlearnrec.demo import run_demo

    result = run_demo(out, device=device)
    typer.echo(result["table"])
    typer.echo(f"results: {out / 'demo.json'}")


@app.command()
def bench(
    config: Path = typer.Option(..., "--config", "-c", help="Bench YAML (see benchmarks/configs/bench_*.yaml)."),
    out: Path | None = typer.Option(None, "--out", help="Results folder (default: the config's `out`)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N or auto (default: the config's, cpu)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Trained-model cache (default: <out>/cache)."),
    plots: bool | None = typer.Option(None, "--plots/--no-plots", help="Draw the figures (default: the config's)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the config and print the plan; train nothing."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress bar over the cells."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1,
                             help="Train the missing full models (originals, references) N at a time in worker "
                                  "processes first; the cells then run in this one."),
) -> None:
    """Run an unlearning benchmark grid (datasets x backbones x methods x scenarios x seeds), resumably.

    Every finished cell is kept under <out>/cells, so re-running the same command redoes only what is missing;
    trained models are cached. Writes results.csv, results.json, results.md and plots/ under <out>.
    """
    import yaml

    from unlearnrec.bench import BenchConfig, run_bench, validate_config

    try:
        cfg = BenchConfig.load(config)
        plan = validate_config(cfg, device)
    except (ValueError, KeyError, FileNotFoundError, yaml.YAMLError) as exc:
        _fail(str(exc))
    typer.echo(plan.describe())
    if dry_run:
        return
    result = run_bench(cfg, out=out, cache_dir=cache_dir, device=device, progress=progress, plots=plots, plan=plan,
                       jobs=jobs)
    typer.echo(result.table)
    typer.echo(f"cells: {result.computed} computed, {result.reused} reused; models trained: {result.trainings}"
               + (f" (+ {result.parallel_trainings} in {jobs} worker processes)" if jobs > 1 else ""))
    typer.echo("results: " + "  ".join(str(p) for p in result.files.values())
               + (f"   plots: {result.plots[0].parent} ({len(result.plots)})" if result.plots else ""))
    if result.failures:
        for f in result.failures:
            typer.secho(f"failed: {f['cell']}: {f['error']}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


def main() -> None:  # pragma: no cover - the console script; tests drive ``app``
    """Run the CLI; an unexpected error is one line (``UNLEARNREC_DEBUG=1`` shows the traceback)."""
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("UNLEARNREC_DEBUG"):
            raise
        typer.secho(f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); please report it "
                    "(UNLEARNREC_DEBUG=1 shows the traceback)", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    main()
