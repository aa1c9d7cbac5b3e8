"""``cnnlstm demo``: make the moving-digits videos, train, evaluate on held-out videos."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io import write_json
from ..build import ModelOptions
from ..data.synthetic import make_moving_digits
from .evaluate import evaluate

__all__ = [
    "DEMO_EPOCHS",
    "DIFFERS",
    "bridge_lines",
    "compare_bridges",
    "demo_lines",
    "ensure_data",
    "has_data",
    "run_demo",
]

# the demo trains what `cnnlstm train DATA --out OUT` trains: the library's defaults (cnnlstm.build's "video" preset,
# ClipSpec's clips, VIDEO_TRAINING), chosen on bench/video_suite.py, not on these videos; but for at most DEMO_EPOCHS
# epochs: on these easy videos the validation loss keeps creeping down long after accuracy is 1.0, so early stopping
# alone would run all 30 (about 13 minutes on 2 busy cores)
DEMO_EPOCHS = 10
DIFFERS = f"the library's video defaults, except at most {DEMO_EPOCHS} epochs (30 and early stopping in cnnlstm train)"


def has_data(data: str | Path) -> bool:
    """Whether the moving-digits set is already at ``data``."""
    return (Path(data) / "train").is_dir() and (Path(data) / "test").is_dir()


def ensure_data(data: str | Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the moving-digits set to ``data`` unless it is already there."""
    if not has_data(data):
        make_moving_digits(data, progress=progress)
    return Path(data)


def run_demo(
    out: str | Path = "runs/demo",
    data: str | Path = "data/moving-digits",
    epochs: int | None = None,
    seed: int = 0,
    bridge: str | None = None,
    progress: bool = True,
    data_progress: Callable[[int, int], None] | None = None,
    precision: str = "32",
) -> dict[str, Any]:
    """Train the library's default model on moving digits, as ``cnnlstm train`` would, and evaluate it on the
    held-out test videos.

    ``epochs`` (default :data:`DEMO_EPOCHS`) and ``bridge`` replace the defaults;
    ``precision="bf16"`` trains with bfloat16 autocast (Lightning's ``bf16-mixed``) and evaluates in bfloat16.

    Returns:
        ``{"test_accuracy", "macro_f1", "seconds", "train": TrainSummary, "eval": EvalResult}``.
    """
    from ..tasks.entry import train

    t0 = time.time()
    data = ensure_data(data, data_progress)
    options = {"seed": seed, "progress": progress, "overwrite": True, "precision": precision}
    summary = train(data, out, model=ModelOptions(bridge=bridge), options={**options, "epochs": epochs or DEMO_EPOCHS})
    result = evaluate(out, data, split="test", precision=precision)
    return {
        "test_accuracy": result.accuracy,
        "macro_f1": result.macro_f1,
        "seconds": round(time.time() - t0, 1),
        "train": summary,
        "eval": result,
    }


def compare_bridges(
    out: str | Path = "runs/demo-bridges",
    data: str | Path = "data/moving-digits",
    bridges: tuple[str, ...] = ("gap", "grid", "flatten", "attention"),
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    precision: str = "32",
) -> list[dict[str, Any]]:
    """Train the default model once per bridge; accuracy, parameters and time for each."""
    rows = []
    for b in bridges:
        t0 = time.time()
        r = run_demo(Path(out) / b, data, epochs, seed, bridge=b, progress=progress, precision=precision)
        rows.append(
            {
                "bridge": b,
                "test_accuracy": r["test_accuracy"],
                "params": r["train"].params,
                "train_seconds": r["train"].seconds,
                "seconds": round(time.time() - t0, 1),
            }
        )
    write_json(Path(out) / "bridges.json", rows)
    return rows


def demo_lines(result: dict[str, Any], out: str | Path, data: str | Path) -> list[str]:
    """What ``cnnlstm demo`` prints after :func:`run_demo`."""
    ev = result["eval"]
    return [
        f"model: {DIFFERS}",
        f"test accuracy {result['test_accuracy']:.3f} (macro-F1 {result['macro_f1']:.3f}) on {ev.videos} held-out "
        f"videos, {result['seconds']:.0f} s in all",
        f"training curves: {result['train'].curves}",
        f"confusion matrix: {ev.confusion_png}",
        f"run folder: {out}  (try: cnnlstm predict {out} {data}/test/up-left/0000.mp4)",
    ]


def bridge_lines(rows: list[dict[str, Any]], out: str | Path) -> list[str]:
    """What ``cnnlstm demo --compare-bridges`` prints: the table of :func:`compare_bridges`."""
    head = f"{'bridge':<10} {'test acc':>8} {'params':>9} {'train s':>8}"
    body = [f"{r['bridge']:<10} {r['test_accuracy']:8.3f} {r['params']:9,d} {r['train_seconds']:8.1f}" for r in rows]
    return [head, *body, f"table: {out}/bridges.json"]
