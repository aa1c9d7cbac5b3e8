"""`import cnnlstm` stays light: no Lightning, PyAV, onnx, matplotlib or click."""

import subprocess
import sys

HEAVY = ["lightning", "pytorch_lightning", "av", "onnx", "onnxruntime", "matplotlib", "click", "safetensors"]


def test_import_pulls_no_optional_dependency():
    code = f"import sys, cnnlstm; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported by `import cnnlstm`: {out.stdout.strip()}"


def test_public_names_are_exported():
    import cnnlstm

    for name in cnnlstm.__all__:
        assert hasattr(cnnlstm, name), name
    assert issubclass(cnnlstm.ShapeError, ValueError)


def test_missing_extra_names_the_extra(monkeypatch):
    import pytest

    from cnnlstm.errors import MissingDependencyError, require

    monkeypatch.setitem(sys.modules, "definitely_not_here_pkg", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'cnnlstm\[video\]'"):
        require("definitely_not_here_pkg", "video", "decoding video")
