"""Test accuracy of cnnlstm's default series model on shipped UCR/UEA sets, 3 seeds, beside published results.

Run: python bench/series_accuracy.py [--epochs 300] [--sets GunPoint,ArrowHead,...]

Published accuracies on the same default train/test splits ship with aeon's test fixtures
(``aeon/testing/example_results_files/classification/accuracy/*.csv``, resample 0 is the default
split). Writes bench/results/series_accuracy.json and docs/series-accuracy.md.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save

from cnnlstm import CNNLSTM
from cnnlstm.data.series import SeriesDataset, collate_series, load_series
from cnnlstm.runs import load_run
from cnnlstm.train.fit import SERIES_EPOCHS, SERIES_MODEL, TrainOptions, fit_series

SETS = ["GunPoint", "ArrowHead", "ItalyPowerDemand", "OSULeaf", "BasicMotions"]
PUBLISHED = ["InceptionTime", "HC2", "WEASEL-2.0", "FreshPRINCE"]


def published() -> dict[str, dict[str, float]]:
    """{method: {data set: accuracy on the default split}} from aeon's shipped result files."""
    import aeon

    folder = Path(aeon.__file__).parent / "testing" / "example_results_files" / "classification" / "accuracy"
    out: dict[str, dict[str, float]] = {}
    for method in PUBLISHED:
        path = folder / f"{method}_accuracy.csv"
        if path.is_file():
            with path.open() as f:
                rows = list(csv.reader(f))
            out[method] = {r[0]: float(r[1]) for r in rows[1:] if len(r) > 1 and r[1]}
    return out


def test_accuracy(run: Path, source: str) -> float:
    r = load_run(run)
    data = load_series(source, "test", r.classes)
    loader = torch.utils.data.DataLoader(
        SeriesDataset(data, r.spec.normalizer), batch_size=128, collate_fn=collate_series
    )
    right = 0
    with torch.inference_mode():
        for b in loader:
            right += int((r.model(b["series"], b["lengths"]).argmax(-1) == b["label"]).sum())
    return right / len(data.x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=SERIES_EPOCHS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sets", default=",".join(SETS))
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    pub = published()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            accs, secs = [], []
            for seed in range(args.seeds):
                t0 = time.time()
                out = Path(tmp) / f"{name}-{seed}"
                fit_series(
                    f"aeon:{name}",
                    out,
                    None,
                    TrainOptions(
                        epochs=args.epochs, batch_size=16, lr=1e-3, val_fraction=0.0, seed=seed, progress=False
                    ),
                )
                accs.append(test_accuracy(out, f"aeon:{name}"))
                secs.append(time.time() - t0)
                print(f"{name} seed {seed}: {accs[-1]:.3f} ({secs[-1]:.0f} s)", flush=True)
            params = sum(p.numel() for p in CNNLSTM.from_pretrained(out).parameters())
            rows.append(
                {
                    "set": name,
                    "mean": statistics.mean(accs),
                    "std": statistics.pstdev(accs),
                    "accs": accs,
                    "seconds_per_run": statistics.mean(secs),
                    "params": params,
                    **{m: pub.get(m, {}).get(name) for m in PUBLISHED},
                }
            )
    result = {
        "machine": machine(),
        "epochs": args.epochs,
        "model": SERIES_MODEL,
        "rows": rows,
        "source": "aeon 1.6.0 testing/example_results_files/classification/accuracy (resample 0)",
    }
    save("series_accuracy", result)
    lines = [
        "# Series classification: cnnlstm's default series model against published results",
        "",
        f"Default split of each set, {args.seeds} seeds, {args.epochs} epochs, whole training split "
        f"(no validation hold-out), model {SERIES_MODEL}. Published accuracies: aeon 1.6.0's result "
        "fixtures, resample 0 (the default split). Measured on "
        f"{result['machine'].get('processor')}, 2 cores.",
        "",
        "| set | cnnlstm mean ± std | " + " | ".join(PUBLISHED) + " | gap to InceptionTime |",
        "|---|---|" + "---|" * len(PUBLISHED) + "---|",
    ]
    for r in rows:
        pubs = " | ".join("-" if r[m] is None else f"{r[m]:.3f}" for m in PUBLISHED)
        gap = "-" if r["InceptionTime"] is None else f"{(r['mean'] - r['InceptionTime']) * 100:+.1f} points"
        lines.append(f"| {r['set']} | {r['mean']:.3f} ± {r['std']:.3f} | {pubs} | {gap} |")
    doc = Path(__file__).parents[1] / "docs" / "series-accuracy.md"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
