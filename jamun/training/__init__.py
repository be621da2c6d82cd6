"""Training the JAMUN denoiser on shards at one fixed noise level (docs/design.md §5, §8).

Each step: clean heavy-atom frames x of the global batch, x centred, y = x + sigma eta, y centred
and Kabsch-aligned onto x (rotation only), loss = ``Denoiser.loss(x, y, graph)``, Adam.

Reproducibility: the frames of a step follow from (seed, step) (:mod:`jamun.data.dataset`) and the
noise of a step is drawn for the whole global batch from a generator seeded by (seed, step), of
which each rank takes its atoms. So W processes with batch b follow the same trajectory as one
process with batch W b, and a run resumed from ``OUT/.work/last.pt`` continues exactly where it
stopped. Checkpoints (model, optimizer, EMA, RNG states, step, metrics so far) live in the
undeclared ``OUT/.work/`` until the outputs are written; a checkpoint made with other settings,
another world size or other shards is ignored. Run ``jamun train --help`` or call :func:`train`.

Checkpoint selection: with ``train.sample_check.every`` set and validation MD folders given, rank 0
walks a few chains of every validation peptide with the evaluated model (the EMA model if EMA is on)
every ``every`` steps and at the end. ``model.ckpt`` is the state with the lowest mean
``sample_error`` (the earliest on ties), otherwise the last state.

Modules, one job each:

- :mod:`~jamun.training.launch`: :func:`train`, this process's run or a torchrun launch;
- :mod:`~jamun.training.loop`: the step loop (:class:`~jamun.training.loop.Trainer`);
- :mod:`~jamun.training.loss`: the objective as a module, what DDP wraps;
- :mod:`~jamun.training.distributed`: device, process group, DDP;
- :mod:`~jamun.training.noise`: noise fixed by (seed, step) and the training pair;
- :mod:`~jamun.training.schedule`: the learning rate of a step;
- :mod:`~jamun.training.validation`: the validation loss;
- :mod:`~jamun.training.selection` and :mod:`~jamun.training.sample_quality`: sample checks and
  the state kept;
- :mod:`~jamun.training.state`: work checkpoints (resume key, last.pt, numbered ones, RNG);
- :mod:`~jamun.training.report`: metrics rows, metrics.csv, loss.png, train.json;
- :mod:`~jamun.training.settings`: the ``train:`` section's checks.
"""

from jamun.training.launch import train

__all__ = ["train"]
