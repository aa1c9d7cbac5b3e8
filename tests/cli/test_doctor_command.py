"""`cnnlstm doctor` through click's runner, and the console script as a real subprocess."""

import subprocess
import sys
import textwrap

from click.testing import CliRunner

from cnnlstm.cli import main


def test_doctor_builtin_model_is_ok():
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "ok: output (8, 10)" in result.output
    assert "backbone.module.block1.conv" in result.output  # the explain table came first


def test_doctor_options_reach_the_model():
    result = CliRunner().invoke(
        main, ["doctor", "--bridge", "flatten", "--input", "2,?,3,64,64", "--num-classes", "7", "--bidirectional"]
    )
    assert result.exit_code == 0, result.output
    assert "ok: output (2, 7)" in result.output
    assert "Flatten" in result.output


def test_doctor_bad_option_is_a_clear_error():
    result = CliRunner().invoke(main, ["doctor", "--bridge", "nope"])
    assert result.exit_code != 0
    assert "unknown bridge 'nope'" in result.output and "gap" in result.output


def test_doctor_on_a_user_file_prescribes_the_fix(tmp_path):
    src = tmp_path / "net.py"
    src.write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.cnn = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(16))
                    self.lstm = nn.LSTM(512, 128, batch_first=True)

                def forward(self, x):
                    n, t = x.shape[:2]
                    maps = self.cnn(x.flatten(0, 1)).unflatten(0, (n, t))
                    return self.lstm(maps)[0][:, -1]

            def build():
                return Net()
            """
        )
    )
    result = CliRunner().invoke(main, ["doctor", f"{src}:build", "--input", "8,16,3,112,112"])
    assert result.exit_code == 1
    assert "LSTM 'lstm'" in result.output
    assert 'bridge="gap" gives F=64' in result.output and 'bridge="flatten" gives F=3136' in result.output
    # the table of what runs, up to the module that fails, before the diagnosis
    lines = result.output.splitlines()
    assert lines[0].split() == ["module", "type", "input", "output", "params"]
    failed = [line for line in lines if line.endswith("<- failed here")]
    assert len(failed) == 1 and "LSTM" in failed[0] and "(8, 16, 64, 7, 7)" in failed[0]


def test_doctor_user_file_needs_a_factory_name(tmp_path):
    src = tmp_path / "net.py"
    src.write_text("def build():\n    pass\n")
    result = CliRunner().invoke(main, ["doctor", str(src)])
    assert result.exit_code != 0
    assert "build" in result.output


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "cnnlstm.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "cnnlstm" in out.stdout
