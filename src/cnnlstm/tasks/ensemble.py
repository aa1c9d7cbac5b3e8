"""Training an ensemble: ``k`` members from seeds ``seed .. seed + k - 1``, each a run folder of its own under
``OUT/members/``, then written into ``OUT`` as one run (:class:`~cnnlstm.ensemble.Ensemble`) that evaluate,
predict, export and stream load as one model.

``--resume`` continues where the ensemble stopped: finished members are kept, an interrupted one resumes from
its checkpoint, the rest train.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..ensemble import Ensemble
from ..errors import ConfigError
from ..model import CNNLSTM
from ..run import RunFolder, TrainSummary
from .options import TrainOptions

__all__ = ["fit_ensemble"]

log = logging.getLogger("cnnlstm")

Fit = Callable[[Path, TrainOptions], "TrainSummary | None"]


def _members_folder(out: Path, opts: TrainOptions) -> Path:
    members = out / "members"
    if members.exists() and not opts.resume:
        if not opts.overwrite:
            raise ConfigError(
                f"{out} already holds an ensemble's members: use --resume to continue it, --overwrite to start it "
                "again, or another --out"
            )
        shutil.rmtree(members)
    if opts.resume and not members.exists():
        raise ConfigError(f"--resume: {members} does not exist (nothing to resume in {out})")
    return members


def fit_ensemble(fit: Fit, out: str | Path, opts: TrainOptions) -> TrainSummary | None:
    """Train ``opts.ensemble`` members with ``fit(folder, options)`` and write them into ``out`` as one run.

    Args:
        fit: trains one model into a run folder (a task's ``fit_*`` with its data bound).
        out: the ensemble's run folder.
        opts: the options of every member; member ``i`` gets the seed ``opts.seed + i``.

    Returns:
        The ensemble's summary (member 0's data and model, the members listed, the seconds of all), or None on
        a non-zero rank of a distributed run.
    """
    out = Path(out)
    t0 = time.time()
    members = _members_folder(out, opts)
    summaries: list[TrainSummary] = []
    for i in range(opts.ensemble):
        folder = RunFolder(members / str(i))
        if opts.resume and (folder.path / "run.json").is_file():  # finished before the interruption
            summaries.append(TrainSummary.from_dict(folder.read_json("run.json")))
            continue
        resume = opts.resume and folder.last_checkpoint.is_file()
        log.info("ensemble member %d of %d (seed %d)", i + 1, opts.ensemble, opts.seed + i)
        one = replace(opts, seed=opts.seed + i, ensemble=1, resume=resume)
        summary = fit(folder.path, one)
        if summary is None:
            return None
        summaries.append(summary)
    first = summaries[0]
    models = [CNNLSTM.from_pretrained(members / str(i)) for i in range(opts.ensemble)]
    run = RunFolder(out)
    Ensemble(models).save_pretrained(out)
    for name in ("labels.json", "data.json"):
        shutil.copyfile(members / "0" / name, out / name)
    rows = [
        {"folder": str(members / str(i)), "seed": opts.seed + i, "epochs": s.epochs, "seconds": s.seconds,
         "stopped": s.stopped, "best_val_acc": s.best_val_acc}
        for i, s in enumerate(summaries)
    ]  # fmt: skip
    return run.write_summary(
        replace(
            first,
            epochs=max(s.epochs for s in summaries),
            seconds=round(time.time() - t0, 1) if not opts.resume else round(sum(s.seconds for s in summaries), 1),
            params=sum(s.params for s in summaries),
            options=opts.to_dict(),
            best_val_acc=None,
            stopped=f"its {opts.ensemble} members were trained",
            members=rows,
        )
    )
