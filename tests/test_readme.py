"""The README's Python examples run as written (on a small ratings file shaped like the one they name)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows = ["userId\tmovieId\trating\ttimestamp"]
    for u in range(1, 61):
        for it in rng.choice(np.arange(1, 50), size=15, replace=False):
            rows.append(f"{u}\t{it}\t{int(rng.integers(1, 6))}\t{int(rng.integers(10**9, 2 * 10**9))}")
    (tmp_path / "ratings.tsv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    own = [b for b in blocks if "ratings.tsv" in b or 'open_checkpoint("runs/mine")' in b]
    assert len(own) == 2
    scope: dict = {}
    for code in own:
        exec(compile(code.replace('"train.epochs": 50', '"train.epochs": 2'), "README.md", "exec"), scope)
    assert (tmp_path / "runs" / "mine" / "data.safetensors").is_file()
