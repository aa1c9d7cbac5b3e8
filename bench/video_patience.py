"""Early stopping's patience, measured on the video suite: which patience keeps the epoch that training on to the
end would keep, and how many epochs it saves.

Run after ``python bench/video_suite.py --configs default-full --seeds 1 --data DIR`` (the library's defaults with
early stopping off: every epoch's validation loss in each run's metrics.csv). For each patience (and min_epochs),
replays Lightning's rule on those curves: stop once the validation loss has not improved for ``patience`` epochs
(not before ``min_epochs``); the kept model is the epoch of the lowest validation loss so far. Where that is the
epoch the full run keeps, the early-stopped run ends with the same model. Writes ``results/video_patience.md``.

Run: python bench/video_patience.py --data DIR
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS


def curves(runs: Path, config: str = "default-full") -> dict[str, list[float]]:
    """Each run's validation loss per epoch, by ``TASK-SEED``."""
    out = {}
    for d in sorted(runs.glob(f"*-{config}-*")):
        metrics = next(d.glob("logs/version_*/metrics.csv"))
        loss = {int(r["epoch"]): float(r["val_loss"]) for r in csv.DictReader(metrics.open()) if r.get("val_loss")}
        out[d.name.replace(f"-{config}", "")] = [loss[e] for e in sorted(loss)]
    return out


def replay(loss: list[float], patience: int, min_epochs: int) -> tuple[int, int]:
    """(epochs trained, kept epoch) under early stopping, both from 1."""
    best, wait = 0, 0
    for e, v in enumerate(loss):
        if v < loss[best]:
            best, wait = e, 0
        elif e > 0:
            wait += 1
        if wait >= patience and e + 1 >= min_epochs:
            return e + 1, best + 1
    return len(loss), best + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="The suite's data folder (its runs/ holds the runs).")
    args = ap.parse_args()
    runs = curves(Path(args.data) / "runs")
    if not runs:
        raise SystemExit(f"no default-full runs in {args.data}/runs: run the suite with --configs default-full first")
    full = {k: replay(v, len(v) + 1, 1)[1] for k, v in runs.items()}
    lines = [
        "# Early stopping's patience on the video suite",
        "",
        f"`python bench/video_patience.py`: the validation-loss curves of {len(runs)} runs of the library's defaults "
        "trained for all their epochs (`default-full`), replayed under each patience. Best epoch of the full runs: "
        + ", ".join(f"{k} {v}/{len(runs[k])}" for k, v in full.items())
        + ".",
        "",
        "| patience | min_epochs | same model as the full run | epochs trained (mean) | epochs saved |",
        "|---|---|---|---|---|",
    ]
    n_full = sum(len(v) for v in runs.values()) / len(runs)
    for p in (3, 4, 6, 8, 10):
        for m in (1, 10):
            got = [replay(v, p, m) for v in runs.values()]
            same = sum(kept == full[k] for k, (_, kept) in zip(runs, got))
            trained = sum(t for t, _ in got) / len(got)
            lines.append(f"| {p} | {m} | {same}/{len(runs)} | {trained:.1f} | {1 - trained / n_full:.0%} |")
    (RESULTS / "video_patience.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
