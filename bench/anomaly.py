"""Anomaly detection, measured: the built-in video set, aeon's KDD-TSAD 135, and a series with injected anomalies.

Run: python bench/anomaly.py [--only video,kdd,injected] [--epochs-video 60]

Each part fits on normal data only (the threshold comes from held-out normal data), then scores the test
part and reports AUROC (per clip for video, per step for series), precision and recall at the threshold,
and AUROC by anomaly kind. Writes bench/results/anomaly.json (a run of some parts keeps the others').
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, save

from cnnlstm.anomaly import auroc
from cnnlstm.apps.anomaly import score_anomaly
from cnnlstm.data.sequences import labelled_sequence
from cnnlstm.data.series import save_sequence
from cnnlstm.data.synthetic import injected_anomaly_series, make_anomaly_videos
from cnnlstm.tasks.anomaly import fit_anomaly
from cnnlstm.tasks.options import TrainOptions


def by_kind(scores: np.ndarray, labels: np.ndarray, kinds: np.ndarray) -> dict[str, float]:
    """AUROC of each anomaly kind against all normals."""
    out = {}
    for k in sorted(set(kinds[labels == 1])):
        keep = (labels == 0) | (kinds == k)
        out[k] = auroc(labels[keep], scores[keep])
    return out


def video(tmp: Path, epochs: int, seed: int) -> dict:
    t0 = time.time()
    data = make_anomaly_videos(tmp / "videos", seed=seed)
    made = time.time() - t0
    run = tmp / "video-run"
    fit = fit_anomaly(data, run, TrainOptions(epochs=epochs, batch_size=16, lr=3e-3, seed=seed, progress=False))
    r = score_anomaly(run, data)
    labels = np.array([c["label"] for c in r["clips"]])
    scores = np.array([c["score"] for c in r["clips"]])
    kinds = np.array([Path(c["path"]).stem.split("_")[0] if c["label"] else "normal" for c in r["clips"]])
    return {
        "auroc": r["auroc"],
        "precision": r["precision"],
        "recall": r["recall"],
        "flagged": r["flagged"],
        "by_kind": by_kind(scores, labels, kinds),
        "clips": {"normal": int((labels == 0).sum()), "anomaly": int((labels == 1).sum())},
        "train_clips": fit.train_items,
        "epochs": epochs,
        "seconds": {"data": round(made, 1), "fit": fit.seconds},
    }


def kdd(tmp: Path, seed: int) -> dict:
    run = tmp / "kdd-run"
    fit = fit_anomaly(
        "aeon:KDD-TSAD_135", run, TrainOptions(epochs=15, batch_size=16, lr=3e-3, seed=seed, progress=False)
    )
    r = score_anomaly(run, "aeon:KDD-TSAD_135")
    _, labels = labelled_sequence("aeon:KDD-TSAD_135", "test")
    region = np.flatnonzero(labels)
    first, last = int(region[0]), int(region[-1])
    return {k: r[k] for k in ("auroc", "precision", "recall", "flagged", "region_rank", "max_step", "steps")} | {
        "region": [first, last],
        # KDD Cup 2021's rule for this archive: the top-scoring step counts if within 100 steps of the region
        "kdd_cup_hit": first - 100 <= r["max_step"] <= last + 100,
        "seconds_fit": fit.seconds,
    }


def injected(tmp: Path, seed: int) -> dict:
    v, y = injected_anomaly_series(seed=seed)
    q = len(v) // 4
    run = tmp / "injected-run"
    fit = fit_anomaly(
        save_sequence(tmp / "train.csv", v[:q]),
        run,
        TrainOptions(epochs=15, batch_size=16, lr=3e-3, seed=seed, progress=False),
        window=64,
    )
    r = score_anomaly(run, save_sequence(tmp / "test.csv", v[q:], y[q:]))
    z = np.array(json.loads((run / "scores" / "series_scores.json").read_text())["z"])
    # the kinds cycle spike, level, flat from the first injected step on (injected_anomaly_series)
    labels = y[q:]
    kinds = np.full(len(labels), "normal", dtype=object)
    starts = [i for i in range(len(labels)) if labels[i] and (i == 0 or not labels[i - 1])]
    for n, s in enumerate(starts):
        e = s
        while e < len(labels) and labels[e]:
            e += 1
        kinds[s:e] = ("spike", "level", "flat")[n % 3]
    return {k: r[k] for k in ("auroc", "precision", "recall", "flagged")} | {
        "by_kind": by_kind(z, labels, kinds),
        "seconds_fit": fit.seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="video,kdd,injected")
    ap.add_argument("--epochs-video", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    result: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.only.split(","):
            t0 = time.time()
            if part == "video":
                result[part] = video(Path(tmp), args.epochs_video, args.seed)
            elif part == "kdd":
                result[part] = kdd(Path(tmp), args.seed)
            else:
                result[part] = injected(Path(tmp), args.seed)
            r = result[part]
            kinds = ", ".join(f"{k} {v:.3f}" for k, v in r.get("by_kind", {}).items())
            print(
                f"{part}: AUROC {r['auroc']:.3f}, precision {r['precision']:.2f}, recall {r['recall']:.2f} "
                + f"({r['flagged']} flagged)"
                + (f"; by kind: {kinds}" if kinds else "")
                + (
                    f"; true region {r['region'][0]}-{r['region'][1]} ranks {r['region_rank']}, top step "
                    f"{r['max_step']} (KDD Cup rule: {'hit' if r['kdd_cup_hit'] else 'miss'})"
                    if "region" in r
                    else ""
                )
                + f" ({time.time() - t0:.0f} s)",
                flush=True,
            )
    earlier = RESULTS / "anomaly.json"  # a run of some parts keeps the other parts' last results
    kept = json.loads(earlier.read_text()) if earlier.is_file() else {}
    save("anomaly", {k: v for k, v in kept.items() if k != "machine"} | result)


if __name__ == "__main__":
    main()
