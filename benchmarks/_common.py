"""Shared helpers for benchmark scripts: machine description and recording results with their command."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from unlearnrec.checkpoint import versions
from unlearnrec.config import RunConfig
from unlearnrec.report import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "load_average_1_5_15": list(os.getloadavg()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def record(name: str, results: dict, markdown: str, out_dir: Path | None = None) -> Path:
    """Write ``<name>.json`` (command, machine, versions, results) and ``<name>.md`` under ``out_dir``."""
    out_dir = Path(out_dir or RESULTS)
    payload = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit(),
        "machine": machine(),
        "versions": versions(),
        "results": results,
    }
    write_json(out_dir / f"{name}.json", payload)
    header = (
        f"# {name}\n\ncommand: `{payload['command']}`  \ndate: {payload['date']}  \n"
        f"machine: {payload['machine']['cpu']} ({payload['machine']['cpu_count']} cores"
        f"{', GPU ' + payload['machine']['gpu'] if 'gpu' in payload['machine'] else ''})  \n"
        f"torch {payload['versions']['torch']}, unlearnrec {payload['versions']['unlearnrec']}\n\n"
    )
    (out_dir / f"{name}.md").write_text(header + markdown + "\n")
    return out_dir / f"{name}.json"


def run_config(args) -> RunConfig:
    """Apply the shared benchmark options: ``--threads``, ``--config`` + overrides, ``--max-seconds``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig.load(args.config).with_overrides(args.overrides)
    if args.max_seconds:
        cfg = cfg.with_overrides({"train.max_seconds": args.max_seconds})
    return cfg
