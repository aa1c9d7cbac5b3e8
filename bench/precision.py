"""What ``precision="auto"`` costs in accuracy: each trained run evaluated on its test split in float32 and in
``auto`` (bfloat16 where this CPU computes it natively, float32 elsewhere), side by side.

Run: python bench/precision.py [--demo] [RUN=DATA ...]

``--demo`` trains the demo (``cnnlstm demo``'s model and data, in a temporary folder) first; each ``RUN=DATA``
is a run folder and the data it was trained on (a split folder ``test/`` inside), e.g. a video-suite task:
``data/runs/default-rotate=data/suite240/rotate``. Per run: test accuracy and macro-F1 in each precision, how many
test videos changed class (at least: from the confusion matrices), and the seconds each evaluation took
(decoding included, one process, in the order float32 then auto). Writes ``results/precision.json`` and
``results/precision.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, save


def compare(run: Path, data: Path) -> dict:
    """Accuracy, macro-F1 and seconds of ``run`` on ``data``'s test split in float32 and in ``auto``."""
    from cnnlstm.apps.evaluate import evaluate

    row: dict = {"run": str(run), "data": str(data)}
    cms = {}
    for precision in ("32", "auto"):
        t0 = time.perf_counter()
        r = evaluate(run, data, split="test", precision=precision, out=Path(tempfile.mkdtemp()))
        row[precision] = {
            "accuracy": r.accuracy,
            "macro_f1": r.macro_f1,
            "seconds": round(time.perf_counter() - t0, 1),
            "runtime": r.runtime,
        }
        cms[precision] = np.array(r.confusion)
    # a video that changed class leaves one cell and enters another: half the L1 distance, at least
    row["changed_at_least"] = int(np.abs(cms["32"] - cms["auto"]).sum() // 2)
    row["videos"] = int(cms["32"].sum())
    return row


def table(rows: list[dict]) -> list[str]:
    out = [
        "| run | videos | float32 accuracy (F1) | auto accuracy (F1) | auto ran as | changed class (at least) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["32"], r["auto"]
        out.append(
            f"| {Path(r['run']).name} | {r['videos']} | {a['accuracy']:.3f} ({a['macro_f1']:.3f}) | "
            f"{b['accuracy']:.3f} ({b['macro_f1']:.3f}) | {b['runtime']} | {r['changed_at_least']} |"
        )
    diffs = [r["auto"]["accuracy"] - r["32"]["accuracy"] for r in rows]
    out.append(f"\nauto - float32 accuracy: mean {np.mean(diffs):+.4f}, worst {min(diffs):+.4f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="*", help="RUN=DATA: a run folder and the data it was trained on.")
    ap.add_argument("--demo", action="store_true", help="Train the demo first and compare it too.")
    args = ap.parse_args()
    pairs = [tuple(Path(p) for p in s.split("=", 1)) for s in args.pairs]
    if args.demo:
        from cnnlstm.apps.demo import run_demo

        tmp = Path(tempfile.mkdtemp())
        data = Path("data/moving-digits")
        run_demo(tmp / "demo", data, progress=False)
        pairs.insert(0, (tmp / "demo", data))
    if not pairs:
        raise SystemExit("nothing to compare: give --demo or RUN=DATA pairs")
    rows = [compare(run, data) for run, data in pairs]
    lines = table(rows)
    m = machine()
    head = f"# precision auto against float32\n\n`python bench/precision.py` on {m.get('processor')}, bf16 native: "
    from cnnlstm.model import bf16_supported

    text = "\n".join([head + f"{bf16_supported()}.\n", *lines]) + "\n"
    (RESULTS / "precision.md").write_text(text)
    save("precision", {"machine": m, "rows": rows})
    print(text)


if __name__ == "__main__":
    main()
