"""Training glue: the Lightning module, the run folder, evaluation and prediction.

The only package (with ``cli.py``) that knows Lightning; importing it needs the ``train`` extra.
"""

from .evaluate import evaluate, load_run, predict
from .fit import TrainOptions, fit_videos

__all__ = ["TrainOptions", "evaluate", "fit_videos", "load_run", "predict"]
