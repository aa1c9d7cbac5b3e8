"""Test accuracy of cnnlstm's default series model on shipped UCR/UEA sets, 3 seeds, beside published results.

Run: python bench/series_accuracy.py [--epochs 300] [--sets GunPoint,ArrowHead,...] [--doc-only]

Published accuracies on the same default train/test splits ship with aeon's test fixtures
(``aeon/testing/example_results_files/classification/accuracy/*.csv``, resample 0 is the default
split) and, for the univariate sets, in the 2017 bake-off table (Bagnall et al.) inside tslearn's wheel
(``tslearn/.cached_datasets/singleTrainTest.csv``): the wheel is fetched once into bench/.cache with
``pip download --no-deps`` and read as a zip, never installed.

Writes bench/results/series_accuracy.json and docs/series-accuracy.md. A run over some of the sets
replaces those sets' rows and keeps the others' (each row names the processor it was measured on), so
the slow sets can be measured in separate runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, save

from cnnlstm import CNNLSTM
from cnnlstm.build import preset
from cnnlstm.data.series import SeriesDataset, collate_series, load_series
from cnnlstm.run import load_run
from cnnlstm.tasks.classify import SERIES_EPOCHS, fit_series
from cnnlstm.tasks.options import TrainOptions

SETS = ["GunPoint", "ArrowHead", "ItalyPowerDemand", "OSULeaf", "BasicMotions"]
PUBLISHED = ["InceptionTime", "HC2", "WEASEL-2.0", "FreshPRINCE"]
BAKEOFF = {"Euclidean_1NN": "1NN-ED", "DTW_Rn_1NN": "1NN-DTW", "BOSS": "BOSS", "COTE": "COTE"}
TSLEARN = "tslearn==0.10.0"
CACHE = Path(__file__).parent / ".cache"


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


def bakeoff() -> dict[str, dict[str, float]]:
    """{method: {data set: accuracy}} from the 2017 bake-off table in tslearn's wheel ({} if unreachable)."""
    CACHE.mkdir(exist_ok=True)
    wheels = sorted(CACHE.glob("tslearn-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), TSLEARN]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            print("tslearn's wheel could not be fetched: the bake-off columns stay empty", file=sys.stderr)
            return {}
        wheels = sorted(CACHE.glob("tslearn-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z:
        lines = z.read("tslearn/.cached_datasets/singleTrainTest.csv").decode().splitlines()
    head = lines[0].split(";")
    out: dict[str, dict[str, float]] = {name: {} for name in BAKEOFF.values()}
    for line in lines[1:]:
        row = line.split(";")
        for col, name in BAKEOFF.items():
            if col in head and row[head.index(col)]:
                out[name][row[0]] = float(row[head.index(col)])
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


def write(rows: list[dict], here: dict, epochs: int, seeds: int) -> None:
    """Merge ``rows`` into the saved results (keeping other sets' rows) and rewrite docs/series-accuracy.md."""
    rows = list(rows)
    pub = published() | bakeoff()
    methods = PUBLISHED + list(BAKEOFF.values())
    earlier = RESULTS / "series_accuracy.json"
    if earlier.is_file():
        old = json.loads(earlier.read_text())
        if old.get("model") == json.loads(json.dumps(preset("series"))):  # tuples come back as lists
            done = {r["set"] for r in rows}
            rows += [r for r in old["rows"] if r["set"] not in done and r.get("epochs") == epochs]
    rows.sort(key=lambda r: SETS.index(r["set"]) if r["set"] in SETS else len(SETS))
    result = {
        "machine": here,
        "epochs": epochs,
        "model": preset("series"),
        "rows": rows,
        "source": "aeon 1.6.0 testing/example_results_files/classification/accuracy (resample 0)",
    }
    save("series_accuracy", result)
    sources = (
        "Published accuracies on the same splits: InceptionTime, HC2 (HIVE-COTE 2), WEASEL-2.0 and FreshPRINCE "
        "from aeon 1.6.0's result fixtures (`aeon/testing/example_results_files/classification/accuracy/`, "
        "resample 0, the default split); 1NN-ED, 1NN-DTW (window tuned), BOSS and COTE from the 2017 bake-off "
        "(Bagnall et al., *The great time series classification bake off*), the table shipped in tslearn 0.10.0's "
        "wheel (`tslearn/.cached_datasets/singleTrainTest.csv`). Neither ships a figure for the multivariate "
        "BasicMotions; a dash marks a figure that does not ship here."
    )
    lines = [
        "# Series classification: cnnlstm's default series model against published results",
        "",
        f"Default split of each set, seeds 0 to {seeds - 1}, {epochs} epochs, whole training split "
        f"(no validation hold-out), model `{preset('series')}`. Measured on "
        + (", ".join(sorted({str(r.get("processor")) for r in rows})) or str(here.get("processor")))
        + f", {here.get('cores')} cores, one thread a run; `python bench/series_accuracy.py` reproduces it.",
        "",
        sources,
        "",
        "| set | cnnlstm mean ± std (seeds) | " + " | ".join(methods) + " | gap to InceptionTime |",
        "|---|---|" + "---|" * len(methods) + "---|",
    ]
    for r in rows:
        got = {m: pub.get(m, {}).get(r["set"]) for m in methods}
        r.update({m: got[m] for m in PUBLISHED})
        pubs = " | ".join("-" if got[m] is None else f"{got[m]:.3f}" for m in methods)
        gap = "-" if got["InceptionTime"] is None else f"{(r['mean'] - got['InceptionTime']) * 100:+.1f} points"
        accs = " / ".join(f"{a:.3f}" for a in r["accs"])
        lines.append(f"| {r['set']} | {r['mean']:.3f} ± {r['std']:.3f} ({accs}) | {pubs} | {gap} |")
    doc = Path(__file__).parents[1] / "docs" / "series-accuracy.md"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=SERIES_EPOCHS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--doc-only", action="store_true", help="rewrite the doc from the saved results")
    args = ap.parse_args()
    here = machine()
    if args.doc_only:
        write([], here, args.epochs, args.seeds)
        return
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
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
                    "epochs": args.epochs,
                    "processor": here.get("processor"),
                }
            )
            write(rows, here, args.epochs, args.seeds)


if __name__ == "__main__":
    main()
