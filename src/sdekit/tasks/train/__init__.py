"""Training score networks: ``train(TrainConfig(...))``, what ``sdekit train`` runs.

One module per concern:

* :mod:`.config`: :class:`TrainConfig`, the hyper-parameters (a resumed run must keep them) and the rest;
* :mod:`.seeds`: determinism, every random draw of step k from generators seeded by (seed, k);
* :mod:`.model`: the network a config describes, and network + loss as one module for DDP;
* :mod:`.ema`: the exponential moving average of the weights;
* :mod:`.checkpoint`: one safetensors file (weights, EMA, Adam moments, RNG states; the rest as JSON in
  its metadata), written atomically, checked field by field when read, never unpickled;
* :mod:`.folder`: the run folder: its lock (one writer), the configuration it records (so --resume
  needs no other flag);
* :mod:`.distributed`: torchrun's environment, the process group, averages over ranks;
* :mod:`.log`, :mod:`.pictures`: log.csv / TensorBoard, and sample grids during training;
* :mod:`.loop`: :func:`train`, the loop that ties them together (it stops on SIGTERM / SIGINT with a
  checkpoint of the step it reached).

Determinism. Everything random in step k (the data order, the loss's t / sigma / noise draws, label
dropout, network dropout) comes from generators seeded by (seed, k) and, for the data order, by
(seed, epoch). The global batch of step k is drawn in full on every rank and each rank takes its
shard, so K processes compute exactly the gradient of one process on the union batch (up to the
order of floating-point sums), and a run resumed from a checkpoint at step k continues bitwise
identically on CPU with the same number of torch threads (the checkpoint records it). The
checkpoint still records every RNG state (torch, numpy, python).
"""
from sdekit.tasks.train.checkpoint import CKPT, CKPT_FORMAT, Checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from sdekit.tasks.train.config import HPARAMS_IGNORED, TrainConfig, hparams, validate
from sdekit.tasks.train.distributed import dist_env
from sdekit.tasks.train.ema import EMA
from sdekit.tasks.train.loop import train
from sdekit.tasks.train.model import LossModule, build_model
from sdekit.tasks.train.seeds import Batches, draw_randomness, step_seed

__all__ = ["TrainConfig", "train", "EMA", "load_checkpoint", "save_checkpoint", "read_checkpoint", "Checkpoint",
           "HPARAMS_IGNORED", "hparams", "validate", "build_model", "LossModule", "Batches", "draw_randomness",
           "step_seed", "dist_env", "CKPT", "CKPT_FORMAT"]
