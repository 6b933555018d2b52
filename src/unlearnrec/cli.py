"""The ``unlearnrec`` command line: every command prints a readable table and writes a JSON result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from unlearnrec.config import RunConfig
from unlearnrec.report import format_table, metrics_rows

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="List, describe and download the registered datasets.")
app.add_typer(data_app, name="data")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _build_config(
    config: Path | None, dataset: str | None, model: str | None, data_root: str | None,
    device: str | None, overrides: list[str],
) -> RunConfig:
    """defaults < config file < explicit options < key=value overrides."""
    cfg = RunConfig.load(config) if config else RunConfig()
    explicit: dict = {}
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
    model: str | None = typer.Option(None, help="Backbone: mf, lightgcn, sgl or simgcl."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    data_root: str | None = typer.Option(None, help="Folder with the datasets (default: $UNLEARNREC_DATA)."),
    device: str | None = typer.Option(None, help="cpu (default), cuda, cuda:N or auto."),
    resume: bool = typer.Option(False, help="Continue the run whose checkpoint is in --out."),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: if a terminal)."
    ),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. train.learning_rate=0.005"),
) -> None:
    """Train a backbone with early stopping on validation, then report test metrics of the best epoch."""
    from unlearnrec import api

    try:
        cfg = _build_config(config, dataset, model, data_root, device, overrides or [])
        result = api.train(cfg, out, progress=progress, resume=resume)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        _fail(str(exc))
    tr = result["training"]
    typer.echo(
        format_table(
            metrics_rows(result["test"]),
            title=f"{cfg.model.name} on {cfg.data.dataset}: test metrics at best validation epoch "
            f"{tr['best_epoch']} ({tr['epochs_run']} epochs, {tr['train_seconds']:.1f} s)",
        )
    )
    typer.echo(f"checkpoint: {out}   result: {out / 'result.json'}")


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
        result = api.evaluate(checkpoint, data_root=data_root, split=split, out=out, device=device)
    except (CheckpointError, ValueError, KeyError, FileNotFoundError) as exc:
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
) -> None:
    """Files, sources, checksums and sizes of one dataset."""
    from unlearnrec.data.errors import UnknownDatasetError
    from unlearnrec.data.registry import dataset_info, load_dataset

    try:
        info = dataset_info(name, data_root, verify=verify)
        if load:
            d = load_dataset(name, data_root)
            info["loaded"] = {**d.stats(), "fingerprint": d.fingerprint()}
    except (UnknownDatasetError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(info, indent=2, default=str))


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
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides of the UnlearnRec config"),
) -> None:
    """Pre-train the UnlearnRec Influence Encoder on simulated deletion requests (one-off cost)."""
    import yaml
    from pydantic import ValidationError

    from unlearnrec import api
    from unlearnrec.checkpoint import CheckpointError
    from unlearnrec.unlearning.unlearnrec import config_for

    try:
        values = {}
        if config:
            try:
                values = yaml.safe_load(config.read_text()) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"{config}: not valid YAML ({exc})") from None
            if not isinstance(values, dict):
                raise ValueError(f"{config}: expected a mapping of UnlearnRec hyper-parameters")
        try:
            cfg = config_for(variant or values.get("variant", "paper"), values)
        except ValidationError as exc:
            raise ValueError(f"{config}: " + "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())) from None
        cfg = cfg.with_overrides({"device": device} if device else {})
        cfg = cfg.with_overrides(overrides or [])
        result = api.pretrain_unlearner(checkpoint, out, config=cfg, data_root=data_root, progress=progress)
    except (CheckpointError, ValueError, KeyError, FileNotFoundError) as exc:
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
) -> None:
    """Unlearn a deletion request (default UnlearnRec: encoder pass plus k fine-tuning epochs)."""
    import yaml

    from unlearnrec import api
    from unlearnrec.checkpoint import CheckpointError

    def split(s: str | None) -> list[str] | None:
        return [x.strip() for x in s.split(",") if x.strip()] if s is not None else None

    try:
        mcfg = yaml.safe_load(method_config.read_text()) if method_config else None
        if mcfg is not None and not isinstance(mcfg, dict):
            raise ValueError(f"{method_config}: expected a mapping of hyper-parameters")
        result = api.unlearn(checkpoint, encoder, out, method=method, method_config=mcfg,
                             finetune_epochs=finetune_epochs, data_root=data_root,
                             device=device, progress=progress, request_file=request, random_edges=random_edges,
                             users=split(users), items=split(items), seed=seed)
    except (CheckpointError, ValueError, KeyError, FileNotFoundError, yaml.YAMLError) as exc:
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
    saved = f"unlearned model: {out}" if result["model_saved"] else "ensemble (not saved as a checkpoint)"
    typer.echo(f"{saved}   result: {out / 'result.json'}")


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
    result = run_bench(cfg, out=out, cache_dir=cache_dir, device=device, progress=progress, plots=plots, plan=plan)
    typer.echo(result.table)
    typer.echo(f"cells: {result.computed} computed, {result.reused} reused; models trained: {result.trainings}")
    typer.echo("results: " + "  ".join(str(p) for p in result.files.values())
               + (f"   plots: {result.plots[0].parent} ({len(result.plots)})" if result.plots else ""))
    if result.failures:
        for f in result.failures:
            typer.secho(f"failed: {f['cell']}: {f['error']}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
