"""Shared bits of the benchmarks: the machine, medians over interleaved repetitions, JSON + PNG output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """Processor model and the flags that matter for speed, core count, versions."""
    info = {"cores": os.cpu_count(), "python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "Model name":
                info["processor"] = val.strip()
            names = {"CPU family": "cpu_family", "Model": "cpu_model"}  # "AMD EPYC" alone: family 25 Zen 3/4, 26 Zen 5
            if key.strip() in names:
                info[names[key.strip()]] = val.strip()
            if key.strip() == "Flags":
                flags = val.split()
                info["flags"] = [f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma"))]
    except OSError:
        info["processor"] = platform.processor()
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def bar_chart(name: str, labels: list[str], values: list[float], ylabel: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(labels), 3.5))
    ax.bar(labels, values, color="tab:blue")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.0f}" if v >= 10 else f"{v:.2f}", ha="center", va="bottom")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
