"""A run's exported graph in place of its PyTorch model: ``evaluate``, ``predict`` and ``stream`` run the deployed
artifact (ONNX Runtime or OpenVINO, float32, bfloat16 or int8) through the same code that measures PyTorch.

:class:`RuntimeModel` reads the export folder's ``export.json``, picks the artifact by runtime, precision and
kind, and answers where the apps use a run's model: ``model(x, lengths)`` gives the clip graph's logits, and
``model.stream()`` a streamer whose ``step(frames)`` carries the state (the step graph's explicit state, or the
state held in OpenVINO by the stateful ``stream`` artifact).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError, ShapeError, require
from ..precision import resolve_precision
from ..run import Run, load_run

if TYPE_CHECKING:
    from .runtime_stream import RuntimeStreamer

__all__ = ["PRECISIONS", "RUNTIMES", "RuntimeModel", "chosen_precision", "load_for_runtime", "ran_on"]

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("32", "fp32", "bf16", "int8", "auto")  # "32" and "fp32" are the same: float32
_OV_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # OpenVINO's CPU inference precision per precision


def load_for_runtime(
    run: str | Path, runtime: str = "torch", precision: str = "32", export: str | Path | None = None
) -> Run:
    """Load a run for inference in ``runtime``: its :class:`~cnnlstm.run.Run`, with the model replaced by a
    :class:`RuntimeModel` of its exported graph unless ``runtime`` is ``"torch"``.

    Args:
        run: the run folder.
        runtime: ``"torch"`` (the run's PyTorch model), ``"onnxruntime"`` or ``"openvino"``.
        precision: ``"32"``/``"fp32"``, ``"bf16"`` (torch; OpenVINO where the CPU computes in bfloat16 natively),
            ``"int8"`` (an exported int8 graph) or ``"auto"``: bfloat16 in torch and OpenVINO where the CPU
            computes it natively, float32 elsewhere and in ONNX Runtime.
        export: the export folder (default ``RUN/export``).
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    precision = chosen_precision(runtime, precision)
    if runtime == "torch":
        if precision == "int8":
            raise ConfigError("int8 runs an exported graph: add --runtime onnxruntime or --runtime openvino")
        return load_run(run, "32" if precision == "fp32" else precision)
    r = load_run(run)
    folder = Path(export) if export else r.path / "export"
    model = RuntimeModel(folder, runtime, "fp32" if precision == "32" else precision, run=r.path)
    return dataclasses.replace(r, model=model, precision=model.precision)


def chosen_precision(runtime: str, precision: str) -> str:
    """What ``precision`` runs as in ``runtime``: ``"auto"`` is ``"bf16"`` in torch and OpenVINO on a CPU that
    computes bfloat16 natively and ``"32"`` elsewhere and in ONNX Runtime; the others are themselves."""
    if precision != "auto":
        return precision
    return "32" if runtime == "onnxruntime" else resolve_precision("auto")


def ran_on(r: Run) -> str:
    """Which runtime and precision a loaded run's model runs in: ``torch 32``, ``onnxruntime int8 (PATH)``."""
    return r.model.describe() if isinstance(r.model, RuntimeModel) else f"torch {r.precision}"


def _command(run: Path | None, runtime: str, precision: str, folder: Path) -> str:
    """The ``cnnlstm export`` command that writes the artifacts of ``runtime`` and ``precision``."""
    cmd = f"cnnlstm export {run or 'RUN'} --runtime {runtime}" + (" --int8" if precision == "int8" else "")
    return cmd + ("" if run is not None and folder == Path(run) / "export" else f" --out {folder}")


class RuntimeModel:
    """A run's exported graphs, called like its model: ``model(x, lengths)`` -> logits, ``model.stream()``.

    Args:
        folder: the export folder (``export.json`` in it).
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        precision: ``"fp32"``, ``"bf16"`` (OpenVINO only, on a CPU with native bfloat16) or ``"int8"``.
        run: the run folder, for the error messages' ``cnnlstm export`` command.
        threads: the runtime's compute threads (None: its default, every core).
    """

    def __init__(
        self,
        folder: str | Path,
        runtime: str,
        precision: str,
        run: str | Path | None = None,
        threads: int | None = None,
    ):
        self.folder, self.runtime, self.precision, self.threads = Path(folder), runtime, precision, threads
        self._run = Path(run) if run is not None else None
        if precision == "bf16" and runtime != "openvino":
            raise ConfigError(f"bf16 runs in torch or openvino, not in {runtime}: use --precision fp32 or int8")
        manifest_path = self.folder / "export.json"
        if not manifest_path.is_file():
            raise ConfigError(
                f"no export folder at {self.folder} (no export.json): make it with "
                f"`{_command(self._run, runtime, precision, self.folder)}`, or name one with --export DIR"
            )
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        self._check_weights()
        self.clip = self._entry("clip")
        self._compiled: dict[str, Any] = {}
        t_axis = [i for i, d in enumerate(self.clip["inputs"][0]["shape"]) if d == "T"]
        self.t_axis = t_axis[0] if t_axis else 1  # (N, T, ...) in the model's layout: T after N
        static_t = self.clip["inputs"][0]["shape"][self.t_axis]
        self.fixed_steps: int | None = static_t if isinstance(static_t, int) else None
        if precision == "bf16":
            self._check_bf16()

    def __repr__(self) -> str:
        return f"RuntimeModel({self.describe()})"

    def describe(self) -> str:
        """Which runtime and precision run, and the clip graph's file: ``onnxruntime int8 (export/model.int8.onnx)``."""
        return f"{self.runtime} {self.precision} ({self.folder / self.clip['path']})"

    # ------------------------------------------------------------------------------------------ artifacts

    def _entry(self, kind: str, precision: str | None = None) -> dict[str, Any]:
        """The manifest's artifact of this runtime, ``precision`` (default the model's; bf16 compiles the float32
        graph) and ``kind``; a clear error naming the command that writes it."""
        want = precision or ("fp32" if self.precision == "bf16" else self.precision)
        for e in self.manifest.get("artifacts", []):
            if (e["runtime"], e["precision"], e["kind"]) == (self.runtime, want, kind):
                return e
        have = ", ".join(f"{e['runtime']} {e['precision']} {e['kind']}" for e in self.manifest.get("artifacts", []))
        raise ConfigError(
            f"{self.folder / 'export.json'} has no {self.runtime} {want} {kind} artifact (it has: {have or 'none'}): "
            f"make it with `{_command(self._run, self.runtime, want, self.folder)}`"
        )

    def _check_weights(self) -> None:
        """Refuse graphs exported from other weights than the run's (trained again since the export)."""
        from .bundle import weights_digest

        recorded = self.manifest.get("weights")
        if self._run is not None and recorded and recorded != weights_digest(self._run):
            raise ConfigError(
                f"{self.folder / 'export.json'} holds graphs of other weights than {self._run / 'model.safetensors'} "
                f"(trained again since the export?): export again with "
                f"`{_command(self._run, self.runtime, self.precision, self.folder)}`"
            )

    def _check_bf16(self) -> None:
        """Refuse bfloat16 where OpenVINO's CPU plugin would emulate it rather than compute in it."""
        ov = require("openvino", "edge", "running an OpenVINO IR")
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if "BF16" not in caps:
            raise ConfigError(
                "--precision bf16 on OpenVINO needs a CPU that computes in bfloat16 natively (AVX512-BF16 or AMX); "
                f"this one offers {', '.join(caps)}: use --precision fp32 or int8"
            )

    def compiled(self, entry: dict[str, Any]) -> Any:
        """The artifact's session (onnxruntime) or compiled model (OpenVINO, in this model's precision)."""
        path = self.folder / entry["path"]
        if path not in self._compiled:
            if self.runtime == "onnxruntime":
                from ._common import session

                self._compiled[path] = session(path, self.threads)
            else:
                ov = require("openvino", "edge", "running an OpenVINO IR")
                config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _OV_HINT[self.precision]}
                if self.threads:
                    config["INFERENCE_NUM_THREADS"] = self.threads
                self._compiled[path] = ov.Core().compile_model(str(path), "CPU", config)
        return self._compiled[path]

    def run(self, entry: dict[str, Any], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One call of a stateless artifact: its outputs in order."""
        compiled = self.compiled(entry)
        if self.runtime == "onnxruntime":
            return compiled.run(None, feeds)
        result = compiled(feeds)
        return [result[out] for out in compiled.outputs]

    # ------------------------------------------------------------------------------------------ the model's face

    def eval(self) -> RuntimeModel:
        return self

    def autocast(self, precision: str = "32") -> contextlib.AbstractContextManager:
        """A no-op: the graph runs in the precision it was exported and compiled in."""
        return contextlib.nullcontext()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of clips in the clip graph.

        Args:
            x: ``(N, T, ...)`` in the model's layout (T where the manifest names it).
            lengths: ``(N,)`` valid frames per clip; a shorter clip runs trimmed to its length (a graph of any
                clip length), refused by a graph of one static T.

        Returns:
            ``(N, classes)`` (or ``(N, T, classes)`` for a per-frame head) float32 logits on ``x``'s device.
        """
        t = x.shape[self.t_axis]
        if self.fixed_steps is not None and t != self.fixed_steps:
            raise ShapeError(
                f"the exported clip graph {self.clip['path']} takes T={self.fixed_steps} frames (a static axis); "
                f"got a clip of {t}: sample clips of {self.fixed_steps} frames"
            )
        name = self.clip["inputs"][0]["name"]
        arr = x.detach().float().cpu().numpy()
        if lengths is None or bool((lengths >= t).all()):
            return torch.from_numpy(self.run(self.clip, {name: arr})[0].copy()).to(x.device)
        if self.fixed_steps is not None:
            raise ShapeError(
                f"the exported clip graph {self.clip['path']} takes whole clips of T={self.fixed_steps}; got shorter "
                f"ones (lengths {lengths.tolist()}): pad them to T with --runtime torch, or export a model of any T"
            )
        outs = [  # each clip alone, trimmed to its frames
            self.run(self.clip, {name: np.take(arr[i : i + 1], range(int(n)), axis=self.t_axis)})[0]
            for i, n in enumerate(lengths.tolist())
        ]
        return torch.from_numpy(np.concatenate(outs, 0)).to(x.device)

    def stream(self) -> RuntimeStreamer:
        """A streamer of one frame per call: OpenVINO's stateful ``stream`` artifact where there is one in this
        precision (the state held in the runtime), else the ``step`` graph with its state carried here."""
        from .runtime_stream import RuntimeStreamer

        return RuntimeStreamer(self)
