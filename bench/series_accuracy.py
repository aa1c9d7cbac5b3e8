"""Series classification: cnnlstm's configurations and the field's peers, side by side on the shipped UCR/UEA
sets' default splits (3 seeds each), beside published results.

    python bench/series_accuracy.py [--configs default,...] [--peers MiniRocket,ROCKET,1NN-DTW]
                                    [--sets GunPoint,...] [--seeds 3] [--doc-only]

cnnlstm's rows train through ``cnnlstm.tasks.entry.train`` as ``cnnlstm train aeon:NAME`` does, with only the
configuration's options given (``default``: none, the library's defaults). The peers run from aeon on the same
splits in the same run: MiniRocket and ROCKET (seeds as random states; unequal-length sets padded to their longest
series by repeating each series' last step, as the UEA archive's equal-length versions are) and 1NN-DTW (full
window) where its cost is small. Every row has its training seconds.

Published accuracies on the same default splits (FCN, ResNet, LSTM-FCN, InceptionTime, MiniRocket, ROCKET, 1NN)
are in ``bench/series_published.json``, each with the repository, path and commit it was read from and how it was
computed (a single run, a mean over runs).

Writes bench/results/series_accuracy.json and docs/series-accuracy.md. Each measurement is saved as it ends and
replaces the saved one of the same set, method and seed (each row names the processor it was measured on), so
the slow sets and configurations can be measured in separate runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, save

from cnnlstm.data.series import SeriesDataset, collate_series, load_series
from cnnlstm.run import load_run

SETS = ["GunPoint", "ArrowHead", "ItalyPowerDemand", "OSULeaf", "BasicMotions", "JapaneseVowels"]
# cnnlstm configurations: the options given to ``train`` (``model``: ModelOptions fields; ``options``: TrainOptions)
CONFIGS: dict[str, dict] = {
    # the library's defaults, given only the data (LSTM-FCN reading T steps of F, since issue 18)
    "default": {},
    # the series default before issue 18's choice: dilated conv1d, pooled by 4, BiLSTM, mean head (its rows were
    # measured as "default", in the current recipe: the lowest training loss kept)
    "conv1d-bilstm": {"model": {"preset": "conv1d-bilstm"}},
    # the series default as measured before issue 18 (300 epochs, batch 16, lr 1e-3); its saved rows kept the last
    # epoch, where the library now keeps the one of the lowest training loss
    "before": {"options": {"batch_size": 16, "lr": 1e-3}},
    # the field's series CNNs before the same BiLSTM and mean head (only the backbone differs from "default")
    "fcn": {"model": {"preset": "fcn"}},
    "resnet": {"model": {"preset": "resnet"}},
    "inception": {"model": {"preset": "inception"}},
    # LSTM-FCN: the FCN beside an LSTM over the dimension-shuffled series; MLSTM-FCN adds squeeze-and-excite
    "lstm-fcn": {"model": {"preset": "lstm-fcn"}},
    "mlstm-fcn": {"model": {"preset": "mlstm-fcn"}},
    # LSTM-FCN whose LSTM reads T steps of F features (no dimension shuffle): any length, no fixed T
    "lstm-fcn-steps": {"model": {"preset": "lstm-fcn", "dimension_shuffle": False}},
    # the field's recipe: the learning rate halved on plateaus of the training loss, in place of the cosine
    "plateau": {"options": {"schedule": "plateau"}},
    "fcn-plateau": {"model": {"preset": "fcn"}, "options": {"schedule": "plateau"}},
    "lstm-fcn-plateau": {"model": {"preset": "lstm-fcn"}, "options": {"schedule": "plateau"}},
}
PEERS = ["MiniRocket", "ROCKET", "1NN-DTW"]
DTW_BUDGET = 2e10  # train x test x length^2 x channels: 1NN-DTW runs where it stays under this (a minute or so)
# published figures on the same splits, each with its repository, path and commit (checked at the source)
PUBLISHED_FILE = Path(__file__).parent / "series_published.json"
SHOWN = ["FCN", "ResNet", "LSTM-FCN", "InceptionTime", "MiniRocket", "1NN-DTW (full window)"]


def published() -> dict[str, dict]:
    """``{method: {"accuracy": {set: figure or None}, "source": where}}`` from ``series_published.json``."""
    return json.loads(PUBLISHED_FILE.read_text())["methods"]


def test_accuracy(run: Path, source: str) -> float:
    r = load_run(run)
    data = load_series(source, "test", r.classes)
    pad = functools.partial(collate_series, pad_to=r.model.fixed_steps)  # a dimension-shuffled LSTM-FCN: one T
    loader = torch.utils.data.DataLoader(SeriesDataset(data, r.spec.normalizer), batch_size=128, collate_fn=pad)
    right = 0
    with torch.inference_mode():
        for b in loader:
            right += int((r.model(b["series"], b["lengths"]).argmax(-1) == b["label"]).sum())
    return right / len(data.x)


def run_config(name: str, config: str, seed: int, tmp: Path) -> dict:
    """Train configuration ``config`` on set ``name`` with ``seed``; its test accuracy and seconds."""
    from cnnlstm.build import ModelOptions
    from cnnlstm.tasks.entry import train

    out = tmp / f"{name}-{config}-{seed}"
    spec = CONFIGS[config]
    t0 = time.time()
    options = {**spec.get("options", {}), "seed": seed, "progress": False, "overwrite": True}
    summary = train(f"aeon:{name}", out, model=ModelOptions(**spec.get("model", {})), options=options)
    seconds = time.time() - t0
    return {"accuracy": test_accuracy(out, f"aeon:{name}"), "seconds": seconds, "epochs": summary.epochs,
            "params": summary.params, "model": summary.model, "options": summary.options}  # fmt: skip


def _padded(xs: list, length: int):
    """``(N, C, length)``: each ``(T, C)`` series padded by repeating its last step."""
    import numpy as np

    return np.stack([np.concatenate([s, np.repeat(s[-1:], length - len(s), 0)]).T for s in xs]).astype(np.float64)


def run_peer(name: str, peer: str, seed: int) -> dict | None:
    """Fit aeon's ``peer`` on the set's training split, score the test split; None where 1NN-DTW would be slow."""
    from aeon.classification.convolution_based import MiniRocketClassifier, RocketClassifier
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    train, test = load_series(f"aeon:{name}", "train"), None
    test = load_series(f"aeon:{name}", "test", train.classes)
    longest = max(len(s) for s in train.x + test.x)
    if peer == "1NN-DTW":
        if len(train.x) * len(test.x) * longest**2 * train.features > DTW_BUDGET:
            return None
        model = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw")
        xtr = [s.T.astype("float64") for s in train.x]
        xte = [s.T.astype("float64") for s in test.x]
    else:
        model = (MiniRocketClassifier if peer == "MiniRocket" else RocketClassifier)(random_state=seed)
        xtr, xte = _padded(train.x, longest), _padded(test.x, longest)
    _warm_up(peer, model)
    t0 = time.time()
    model.fit(xtr, train.y)
    predicted = model.predict(xte)
    seconds = time.time() - t0  # fit and predict: a nearest-neighbour classifier does its work in predict
    return {"accuracy": float((predicted == test.y).mean()), "seconds": seconds}


_WARM: set[str] = set()


def _warm_up(peer: str, model) -> None:
    """Fit and predict once on tiny random data, so numba's compilation is not timed as training."""
    import numpy as np
    from sklearn.base import clone

    if peer in _WARM:
        return
    x = np.random.default_rng(0).normal(size=(8, 1, 32))
    clone(model).fit(x, np.array([0, 1] * 4)).predict(x)
    _WARM.add(peer)


def _key(row: dict) -> tuple:
    return row["set"], row["method"], row["seed"]


def _saved() -> list[dict]:
    path = RESULTS / "series_accuracy.json"
    rows = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
    return [r for r in rows if "method" in r]  # rows of the one-model format before the peers are dropped


def _cell(rows: list[dict]) -> str:
    accs = [r["accuracy"] for r in rows]
    spread = f" ± {statistics.pstdev(accs):.3f}" if len(accs) > 1 else ""
    return f"{statistics.mean(accs):.3f}{spread} ({statistics.mean(r['seconds'] for r in rows):.0f} s)"


def write(rows: list[dict], here: dict) -> None:
    """``results/series_accuracy.json`` and ``docs/series-accuracy.md`` from every saved row."""
    save("series_accuracy", {"machine": here, "configs": CONFIGS, "rows": rows})
    pub = published()
    shown = [m for m in [*(f"cnnlstm {c}" for c in CONFIGS), *PEERS] if any(r["method"] == m for r in rows)]
    methods = SHOWN
    sets = [s for s in SETS if any(r["set"] == s for r in rows)]
    lines = [
        "# Series classification: cnnlstm and its peers on the default splits",
        "",
        "`python bench/series_accuracy.py` on "
        + ", ".join(sorted({str(r.get("processor")) for r in rows}))
        + f", {here.get('cores')} cores. Test accuracy, mean ± spread over seeds (training seconds a run); the "
        "peers (aeon's MiniRocket, ROCKET, 1NN-DTW) ran on the same splits in the same runs. Published: "
        "the peers' seconds are fit and predict. Published figures on the same splits, sources below.",
        "",
        "| set | " + " | ".join(shown) + " | " + " | ".join(f"{m} (published)" for m in methods) + " |",
        "|---|" + "---|" * (len(shown) + len(methods)),
    ]
    for s in sets:
        cells = [_cell([r for r in rows if r["set"] == s and r["method"] == m]) if any(
            r["set"] == s and r["method"] == m for r in rows) else "-" for m in shown]  # fmt: skip
        pubs = ["-" if pub[m]["accuracy"].get(s) is None else f"{pub[m]['accuracy'][s]:.3f}" for m in methods]
        lines.append(f"| {s} | " + " | ".join(cells + pubs) + " |")
    means = []
    for m in shown:
        per_set = [statistics.mean(r["accuracy"] for r in rows if r["set"] == s and r["method"] == m) for s in sets
                   if any(r["set"] == s and r["method"] == m for r in rows)]  # fmt: skip
        full = len(per_set) == len(sets)
        means.append(f"{statistics.mean(per_set):.3f} / {min(per_set):.3f}" if full and per_set else "-")
    lines.append("| **mean / worst set** | " + " | ".join(means) + " |" + " |" * len(methods))
    lines += ["", "Published figures, from `bench/series_published.json`:", ""]
    lines += [f"- {m}: {pub[m]['source']}" for m in methods]
    doc = Path(__file__).parents[1] / "docs" / "series-accuracy.md"
    doc.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="default", help="Of: " + ", ".join(CONFIGS))
    ap.add_argument("--peers", default=",".join(PEERS), help="Of: " + ", ".join(PEERS) + " ('' for none)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--doc-only", action="store_true", help="rewrite the doc from the saved results")
    args = ap.parse_args()
    here = machine()
    if args.doc_only:
        return write(_saved(), here)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    jobs = [("cnnlstm", c) for c in args.configs.split(",") if c] + [("peer", p) for p in args.peers.split(",") if p]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            for kind, what in jobs:
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    r = run_config(name, what, seed, Path(tmp)) if kind == "cnnlstm" else run_peer(name, what, seed)
                    if r is None:
                        print(f"{name} {what}: skipped (too slow here)", flush=True)
                        break
                    method = f"cnnlstm {what}" if kind == "cnnlstm" else what
                    row = {"set": name, "method": method, "seed": seed, **r, "processor": here.get("processor")}
                    print(f"{name} {method} seed {seed}: {r['accuracy']:.3f} ({r['seconds']:.0f} s)", flush=True)
                    write([*[x for x in _saved() if _key(x) != _key(row)], row], here)
                    if what == "1NN-DTW":  # deterministic: one seed says it all
                        break


if __name__ == "__main__":
    main()
