"""Edge deployment side by side in one run: one trained run's model as PyTorch float32 and bfloat16, ONNX Runtime
float32 and static int8, OpenVINO float32, bfloat16 and int8: size on disk, milliseconds per clip at batch 1 and 8,
per streamed frame at batch 1, top-1 agreement with PyTorch float32 and accuracy on the run's test clips; and the
drift of every exported streaming step (float32 and the calibrated int8 ones) over 200 streamed frames, against
PyTorch float32's stream, per 50-frame window. Keras 3/TensorFlow float32 is the anchor row, on the reference model,
where TensorFlow is installed.

Run: python bench/edge.py [--run DIR] [--quick] [--threads N] [--rounds R]

The run: ``--run DIR`` (a trained video run whose data folder still exists, for accuracy), else the demo's model
(``cnnlstm demo``: the library's video defaults) trained on the built-in moving-digits videos in bench/.cache/,
for ``--epochs`` (default the demo's). Its graphs are exported with ``cnnlstm export --runtime onnxruntime|openvino
--int8`` into bench/.cache/edge-export/. Every runtime runs on ``--threads`` compute threads (default torch's), each
latency is the median of ``--rounds`` interleaved rounds (every artifact timed in turn, so a slow spell spreads over
all of them) after warm-up calls. ``--quick`` (a smoke run of about a minute): 8 training videos a class for one
epoch, one round of 2 calls. Writes bench/results/edge.json and edge.md (with ``--run DIR``: edge-DIRNAME.json
and .md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE))
from _common import RESULTS, machine, save, summary  # noqa: E402
from _edge import batch_of, drift_table, drift_windows, interleaved, looped_frames, table  # noqa: E402

# (row, runtime, precision)
ROWS = [
    ("PyTorch float32", "torch", "32"),
    ("PyTorch bfloat16", "torch", "bf16"),
    ("ONNX Runtime float32", "onnxruntime", "fp32"),
    ("ONNX Runtime int8", "onnxruntime", "int8"),
    ("OpenVINO float32", "openvino", "fp32"),
    ("OpenVINO bfloat16", "openvino", "bf16"),
    ("OpenVINO int8", "openvino", "int8"),
]


def glibc_heap() -> None:
    """OpenVINO's CPU plugin aborts in a process with mimalloc preloaded: run again without it."""
    preload = os.environ.get("LD_PRELOAD", "")
    if "mimalloc" in preload:
        kept = ":".join(p for p in preload.split(":") if p and "mimalloc" not in p)
        env = {**os.environ, "LD_PRELOAD": kept}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def demo_run(quick: bool, epochs: int | None) -> tuple[Path, Path, float]:
    """The demo's model trained on moving digits (a small set for ``quick``): the run, its data, and the test
    accuracy ``cnnlstm evaluate`` measured in PyTorch float32. Trained in a process of its own: OpenVINO run after
    training (Lightning, PyAV decoding in DataLoader workers) in one process ended it in a segfault, every time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_train_demo, quick, epochs).result()


def _train_demo(quick: bool, epochs: int | None) -> tuple[Path, Path, float]:
    from cnnlstm.apps.demo import ensure_data, has_data, run_demo
    from cnnlstm.data.synthetic import make_moving_digits

    data = CACHE / ("moving-digits-quick" if quick else "moving-digits")
    if quick and not has_data(data):
        make_moving_digits(data, train_per_class=8, test_per_class=2, sizes=((64, 64),), lengths=(8, 12))
    ensure_data(data)
    run = CACHE / ("edge-run-quick" if quick else "edge-run")
    result = run_demo(run, data, epochs=epochs or (1 if quick else None), progress=False)
    return run, data, result["test_accuracy"]


def export_all(run: Path, folder: Path, quick: bool) -> dict:
    """``cnnlstm export RUN --runtime R --int8`` for both runtimes into ``folder``: what each printed, and how long."""
    import shutil

    from cnnlstm.export import export_run

    shutil.rmtree(folder, ignore_errors=True)
    out = {}
    for runtime in ("onnxruntime", "openvino"):
        t0 = time.perf_counter()
        n = 8 if quick else 32
        result = export_run(run, runtime=runtime, int8=True, out=folder, sample=n, calibration=n)
        out[runtime] = {"seconds": round(time.perf_counter() - t0, 1), "lines": result.lines()}
    return out


def held_out_clips(run: Path, data: Path | None, limit: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The run's test clips ``(N, T, ...)`` as ``evaluate`` reads them (its clip spec, the test split, else the
    validation split) and their labels; random clips and no labels where the data is gone."""
    from cnnlstm.data.batch import collate_clips
    from cnnlstm.data.datasets import VideoDataset, find_videos
    from cnnlstm.export import sample_clips
    from cnnlstm.run import load_run

    r = load_run(run)
    if r.model.layout.value.index("T") != 1:
        raise SystemExit(f"bench/edge.py streams clips with T on axis 1; this run's layout is {r.model.layout.value}")
    split = next((s for s in ("test", "val") if data is not None and (data / s).is_dir()), None)
    if split is None:
        x, kind = sample_clips(r, min(limit, 32), role="check")
        return x, None, f"{len(x)} {kind} clips (no test split found)"
    items, classes, _ = find_videos(data, split)
    ds = VideoDataset(items[:limit], classes, spec=r.spec, warn=False)
    batch = collate_clips([ds[i] for i in range(len(ds))])
    if batch["lengths"] is not None:
        raise SystemExit("bench/edge.py: some test videos are shorter than the clip length; pad='repeat' runs only")
    return batch["video"], batch["label"], f"{len(ds)} clips of {data / split}"


def load_models(run: Path, folder: Path, threads: int) -> list[tuple[str, str, str, object]]:
    """Each row's model (the run's PyTorch model, or a RuntimeModel of the export), or why it cannot run here."""
    from cnnlstm.errors import CnnlstmError
    from cnnlstm.export.runtime import RuntimeModel
    from cnnlstm.run import load_run

    out = []
    for name, runtime, precision in ROWS:
        try:
            if runtime == "torch":
                model = load_run(run, precision).model
            else:
                model = RuntimeModel(folder, runtime, precision, run=run, threads=threads)
        except CnnlstmError as e:
            model = str(e)  # the row is skipped: why
        out.append((name, runtime, precision, model))
    return out


def sizes_mb(run: Path, folder: Path, model: object) -> dict:
    """The files a row runs: the clip graph and the stream (or step) graph; PyTorch: its weights, for both."""
    from cnnlstm.export._common import artifact_bytes
    from cnnlstm.export.runtime import RuntimeModel

    if not isinstance(model, RuntimeModel):  # PyTorch: model.safetensors in float32 (bfloat16 casts at run time)
        mb = (run / "model.safetensors").stat().st_size / 1e6
        return {"clip": mb, "stream": mb}
    stream = model.stream().entry
    return {k: artifact_bytes(folder / e["path"]) / 1e6 for k, e in (("clip", model.clip), ("stream", stream))}


@torch.inference_mode()
def predictions(model, precision: str, x: torch.Tensor) -> np.ndarray:
    """Top-1 classes of clips ``x`` in batches of 8."""
    with model.autocast(precision):
        return torch.cat([model(x[i : i + 8]).float().argmax(-1) for i in range(0, len(x), 8)]).numpy()


def cases(name: str, model, precision: str, x: torch.Tensor) -> dict:
    """The timed calls of a row: a clip at batch 1 and 8, a streamed frame at batch 1 (its next frame each call)."""
    streamer = model.stream()
    frames = looped_frames(x, 64, 1)[0]  # (64, C, H, W): one stream's frames
    step = {"i": 0}

    def frame() -> None:
        with model.autocast(precision):
            streamer.step(frames[step["i"] % len(frames)].unsqueeze(0))
        step["i"] += 1

    def clip(batch: torch.Tensor):
        def call() -> None:
            with model.autocast(precision), torch.inference_mode():
                model(batch)

        return call

    return {(name, "1"): clip(batch_of(x, 1)), (name, "8"): clip(batch_of(x, 8)), (name, "frame"): frame}


def measure(run: Path, folder: Path, models, x, labels, args) -> list[dict]:
    """Every row: sizes, latencies (interleaved rounds over all rows), agreement and accuracy."""
    rows, timed = [], {}
    ref = None
    for name, runtime, precision, model in models:
        if isinstance(model, str):
            rows.append({"name": name, "runtime": runtime, "precision": precision, "skipped": model})
            continue
        pred = predictions(model, precision, x)
        ref = pred if ref is None else ref  # PyTorch float32 runs first
        row = {"name": name, "runtime": runtime, "precision": precision, "size_mb": sizes_mb(run, folder, model)}
        row["ran"] = model.describe() if hasattr(model, "describe") else f"torch {precision}"
        row["agreement"] = float((pred == ref).mean())
        row["accuracy"] = None if labels is None else float((pred == labels.numpy()).mean())
        timed.update(cases(name, model, precision, x))
        rows.append(row)
    warm, per_round = (1, 2) if args.quick else (3, 5)
    times = interleaved(timed, args.rounds, per_round, warm)
    for row in rows:
        if not row.get("skipped"):
            row["clip_ms"] = {b: times[(row["name"], b)] for b in ("1", "8")}
            row["frame_ms"] = times[(row["name"], "frame")]
    return rows


@torch.inference_mode()
def torch_stream(model, frames: torch.Tensor) -> np.ndarray:
    """Each frame's logits ``(S, F, classes)`` of ``frames`` ``(S, F, ...)`` streamed through PyTorch float32."""
    streamer = model.stream()
    return torch.stack([streamer.step(frames[:, t]) for t in range(frames.shape[1])], 1).numpy()


def drift(run: Path, folder: Path, x: torch.Tensor, frames: int, window: int) -> dict:
    """Every exported step and stream graph against PyTorch float32's stream over ``frames`` frames looped from the
    test clips (up to 8 streams), per ``window`` frames."""
    from cnnlstm.export.ov_stream import _stateful_logits
    from cnnlstm.export.verify import runner, stream_logits
    from cnnlstm.run import load_run

    model = load_run(run).model
    streams = min(8, len(x))
    long = looped_frames(x, frames, streams)  # (S, F, C, H, W)
    ref = torch_stream(model, long)
    manifest = json.loads((folder / "export.json").read_text())
    rows = {}
    order = {"onnxruntime": 0, "openvino": 1, "fp32": 0, "int8": 1, "step": 0, "stream": 1}
    arts = [a for a in manifest["artifacts"] if a["kind"] in ("step", "stream")]
    for a in sorted(arts, key=lambda a: (order[a["runtime"]], order[a["precision"]], order[a["kind"]])):
        path = folder / a["path"]
        if a["kind"] == "step":
            got = stream_logits(model, runner(path), long, batch=streams)
        else:
            got = _stateful_logits(path, long, 1, batch=streams)
        calibrated = ", calibrated" if a["precision"] == "int8" else ""
        rows[f"{a['runtime']} {a['precision']} {a['kind']} ({a['path']}{calibrated})"] = drift_windows(ref, got, window)
    return {"reference": "PyTorch float32 stream", "streams": streams, "frames": frames, "window": window, "rows": rows}


def keras_python() -> tuple[str | None, str]:
    """A Python with TensorFlow: bench/.venv-keras's (bench/speed.py makes it), else this one; or why there is none."""
    venv = HERE / ".venv-keras" / "bin" / "python"
    if venv.is_file():
        return str(venv), "bench/.venv-keras"
    if importlib.util.find_spec("tensorflow") is not None:
        return sys.executable, "this interpreter"
    return None, (
        "no Keras/TF anchor row: tensorflow is not installed (not in this interpreter, and no bench/.venv-keras, "
        "which bench/speed.py makes with pip)"
    )


def keras_anchor(threads: int, repeats: int, warm: int) -> dict:
    """Keras 3/TensorFlow float32 on the reference model (bench/_keras_ref.py, 16x112x112x3 clips, 4 blocks 32-256,
    LSTM 256) beside cnnlstm's PyTorch float32 of the same model, ms per clip at batch 1 and 8, on ``threads``."""
    python, where = keras_python()
    if python is None:
        return {"skipped": where}
    from cnnlstm import CNNLSTM

    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}
    torch.manual_seed(0)
    ref = CNNLSTM(input_shape=(16, 3, 112, 112), num_classes=10).eval()
    out: dict = {"python": where, "model": "reference: 16x3x112x112, 4 conv blocks 32-256, GAP, LSTM 256, 10 classes"}
    for b in ("1", "8"):
        cmd = [python, str(HERE / "_keras_ref.py"), "infer", b, str(repeats), str(warm)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return {"skipped": f"bench/_keras_ref.py failed ({python}): {last}"}
        keras = json.loads(done.stdout.strip().splitlines()[-1])
        x = torch.randn(int(b), 16, 3, 112, 112)
        with torch.inference_mode():
            mine = interleaved({"torch": lambda x=x: ref(x)}, 1, repeats, warm)["torch"]
        out[f"batch {b}"] = {"keras_ms": summary([t * 1e3 for t in keras["times"]]), "cnnlstm_torch_ms": mine}
        out["versions"] = keras["versions"]
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Edge deployment, side by side (bench/edge.py)",
        "",
        f"Processor: {m.get('processor')}, {m.get('cores')} cores; every runtime on {result['threads']} threads; "
        f"torch {m.get('torch')}. Run: {result['run']}; test clips: {result['clips']}; `cnnlstm evaluate`'s "
        f"accuracy of it in PyTorch float32: {result['evaluate_accuracy_torch_fp32']}."
        + (" `--quick`: a smoke run, its timings are not measurements." if result["quick"] else ""),
        "",
        *table(result["rows"], result["threads"]),
        "",
        f"Drift over {result['drift']['frames']} streamed frames ({result['drift']['streams']} streams looped from the "
        f"test clips) against the {result['drift']['reference']}, per {result['drift']['window']} frames:",
        "",
        *drift_table(result["drift"]),
        "",
    ]
    k = result["keras"]
    if k.get("skipped"):
        lines.append(f"Keras/TF anchor: {k['skipped']}.")
    else:
        lines.append(f"Keras/TF anchor ({k['model']}; ms per call of 1 and of 8 clips, median):")
        for b in ("1", "8"):
            e = k[f"batch {b}"]
            lines.append(f"- batch {b}: Keras/TF {e['keras_ms']['median']:.1f}, cnnlstm PyTorch "
                         f"{e['cnnlstm_torch_ms']['median']:.1f}")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a trained video run (default: train the demo's model)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: small data, one epoch, one short round")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 5; --quick 1)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs of the demo's model")
    ap.add_argument("--frames", type=int, default=200, help="streamed frames of the drift report")
    args = ap.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 5)
    glibc_heap()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.run:
        from cnnlstm.run import RunFolder

        run, data, evaluated = args.run, (RunFolder(args.run).summary() or {}).get("data"), None
        data = Path(data) if data else None
    else:
        run, data, evaluated = demo_run(args.quick, args.epochs)
    folder = CACHE / "edge-export"
    exported = export_all(run, folder, args.quick)
    x, labels, what = held_out_clips(run, data, 64 if args.quick else 10_000)
    rows = measure(run, folder, load_models(run, folder, args.threads), x, labels, args)
    result = {
        "machine": machine(), "threads": args.threads, "quick": args.quick, "rounds": args.rounds,
        "run": str(run), "clips": what, "evaluate_accuracy_torch_fp32": evaluated, "export": exported, "rows": rows,
        "drift": drift(run, folder, x, args.frames, 50), "keras": keras_anchor(args.threads, 2 if args.quick else 5, 1),
    }  # fmt: skip
    result["seconds"] = round(time.perf_counter() - t0, 1)
    name = f"edge-{Path(run).name}" if args.run else "edge"  # the demo's table, and one per --run beside it
    path = save(name, result)
    md = RESULTS / f"{name}.md"
    md.write_text(markdown(result))
    print(markdown(result))
    print(f"json: {path}\nmd:   {md}\n{result['seconds']} s")


if __name__ == "__main__":
    main()
