"""``cnnlstm run script.py ...``: a training script of your own in the process the ``cnnlstm`` command trains in.

The console script has already re-executed itself before this runs (:func:`cnnlstm._fast.alloc.launch_env`:
glibc's thresholds raised, or mimalloc preloaded with ``--allocator mimalloc``, and PyTorch's huge pages), as
``python -m torch.backends.xeon.run_cpu`` preloads an allocator for a script; here the script itself runs, as
``python script.py ARGS`` or ``python -m MODULE ARGS`` would run it.
"""

from __future__ import annotations

import os
import runpy
import sys

import click

from .._fast.alloc import ALLOCATORS
from ._app import main


@main.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--allocator",
    type=click.Choice(ALLOCATORS),
    default="auto",
    show_default=True,
    help="auto/glibc: glibc keeps freed memory (safe beside any library); mimalloc: preloaded (cnnlstm[fast]; "
    "not with OpenVINO, whose CPU plugin aborts under it); none: the process as python starts it.",
)
@click.option("-m", "module", is_flag=True, help="TARGET is a module, run as `python -m TARGET`.")
@click.argument("target")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def launch(allocator: str, module: bool, target: str, args: tuple[str, ...]) -> None:
    """Run a Python script (or, with -m, a module) with ARGS in a process tuned for training.

    The process keeps its freed memory for the next step, and PyTorch takes huge pages where the kernel offers
    them: what the cnnlstm command does for itself. The script runs as `python TARGET ARGS` would run it; its
    exit status is the command's. In-process, without a launcher: `cnnlstm.tune_malloc()`."""
    if not module and not os.path.isfile(target):
        hint = "" if target.endswith(".py") else f" (a module? cnnlstm run -m {target})"
        raise click.BadParameter(f"no such script: {target}{hint}", param_hint="TARGET")
    sys.argv = [target, *args]
    if module:
        sys.path.insert(0, os.getcwd())
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        runpy.run_path(target, run_name="__main__")
