"""sdekit train: train a score network (also under torchrun --nproc_per_node=K)."""
from sdekit.apps.commands.common import ACCEL_HELP, AUTOCAST_CHOICES

HELP = {
    "data": "digits | toy:NAME | folder:PATH | mnist:DIR | fashion-mnist:DIR | cifar10:DIR",
    "sde": "ve | vp | subvp | edm | flow",
    "out": "run folder (checkpoint, log.csv, samples/, model/ bundle)",
    "loss": "dsm | edm | smld | ddpm | flow | cd (consistency distillation of --teacher) (default: flow for --sde flow, "
            "else edm)",
    "recipe": "start from a named recipe, flags given beside it override its values: quick (a small U-Net that "
              "shows data-like samples within minutes on a CPU) or a shipped model's own (mnist, digits, emoji, "
              "mnist-cd: the hyper-parameters recorded in its bundle)",
    "init": "start from the weights of this sdekit model bundle (a bundled model's name, a bundle folder or a run's "
            "model/ folder) whose network is the one the other flags describe, or fine-tune the UNet2DModel of this "
            "diffusers folder (its schedule and parametrisation; --sde, --precond and the network flags do not "
            "apply; the run's model/ is then a diffusers folder); a resumed run keeps the weights of its checkpoint",
    "teacher": "cd loss: the model to distil (a bundled model's name or a bundle folder); the student starts as its copy",
    "cd_levels": "cd loss: noise levels N of the Karras grid (Song et al. 2023: 18)",
    "weighting": "dsm weighting: sigma2 | likelihood",
    "reduce": "mean | sum over a sample's dimensions",
    "precond": "network parametrisation: edm | eps | scaled_score | score | velocity "
               "(default: velocity for the flow loss, else edm)",
    "time_density": "flow loss: density of the path time tau, uniform | logit_normal",
    "ln_mean": "flow loss, logit_normal: mean of logit tau (Esser et al. 2024: 0)",
    "ln_std": "flow loss, logit_normal: standard deviation of logit tau (Esser et al. 2024: 1)",
    "net": "auto | unet | mlp",
    "ch_mult": "channel multipliers per level, e.g. 1,2,2",
    "attn": "resolutions with self-attention, e.g. 8 (empty: none)",
    "class_cond": "class-conditional network (with a null label)",
    "label_dropout": "probability of training with the null label (classifier-free guidance)",
    "max_minutes": "stop (with a checkpoint) after this much wall time",
    "resume": "continue the run in --out from its checkpoint with the configuration it recorded (flags that may "
              "change: --steps, intervals, --max-minutes, --threads, execution options); a finished run is "
              "reported complete (exit 0), a folder without a checkpoint yet starts the run",
    "overwrite": "start a new run in an --out that holds one (its checkpoint is deleted)",
    "download": "fetch missing MNIST / Fashion-MNIST / CIFAR-10 files into DIR (MD5-checked)",
    "steps": "optimisation steps in all (a resumed run continues to this count)",
    "batch_size": "images per step (per process under torchrun)",
    "seed": "seed of the initial weights, the data order and the noise",
    "lr": "Adam learning rate after warm-up (constant)",
    "warmup": "linear learning-rate warm-up steps",
    "grad_clip": "largest gradient norm (0: no clipping)",
    "ema": "EMA decay of the weights the bundle keeps, warmed up as min(ema, (1 + k) / (10 + k))",
    "P_mean": "edm loss: ln sigma ~ N(P_mean, P_std^2) (Karras et al. 2022, Table 1)",
    "P_std": "edm loss: standard deviation of ln sigma",
    "sigma_data": "data standard deviation of EDM's preconditioning",
    "ch": "base channel width of the U-Net",
    "num_res_blocks": "residual blocks per U-Net level",
    "dropout": "dropout probability in the residual blocks",
    "embedding": "noise-level embedding: fourier | positional",
    "hidden": "mlp: hidden width",
    "depth": "mlp: hidden layers",
    "image_size": "resize images to this size a side (folder, MNIST, CIFAR)",
    "channels": "convert images to this many channels, 1 or 3 (folder, MNIST, CIFAR)",
    "sample_every": "write an EMA sample grid to samples/ every this many steps",
    "ckpt_every": "write the checkpoint and the model bundle every this many steps",
    "log_every": "append a row to log.csv every this many steps",
    "threads": "torch CPU threads per process (default: on --resume the checkpoint's, else $OMP_NUM_THREADS "
               "if set, else the CPUs this process may use that the load average leaves free, at most 8; "
               "a resumed run is bitwise exact at the same count)",
}
HELP.update(ACCEL_HELP)


def _ints(s):
    return tuple(int(v) for v in s.split(",") if v.strip())


def add_arguments(p):
    """One flag per TrainConfig field. No flag has an argparse default: ``args`` holds only the flags
    given, so that --resume can tell them from the run's recorded configuration (:func:`run`)."""
    import argparse
    import dataclasses
    from sdekit.tasks.train import TrainConfig
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        help_ = HELP.get(f.name, "") + (f" (default: {default})" if default is not None and default is not False else "")
        if isinstance(default, bool):
            if f.name == "progress":
                p.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
                               help="no progress bar")
            else:
                p.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_)
        elif isinstance(default, tuple):
            p.add_argument(flag, type=_ints, default=argparse.SUPPRESS, help=help_)
        elif f.name in ("teacher", "init", "loss", "precond", "recipe"):
            p.add_argument(flag, type=str, default=argparse.SUPPRESS, help=help_)
        elif f.name in ("image_size", "channels", "threads"):
            p.add_argument(flag, type=int, default=argparse.SUPPRESS, help=help_)
        elif f.name == "autocast":
            p.add_argument(flag, choices=AUTOCAST_CHOICES, default=argparse.SUPPRESS, help=help_)
        elif f.name == "max_minutes":
            p.add_argument(flag, type=float, default=argparse.SUPPRESS, help=help_)
        else:
            p.add_argument(flag, type=type(default), default=argparse.SUPPRESS, help=help_)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")


def run(args):
    """Train; exit code 0, or 128 + the signal's number (130 for SIGINT, 143 for SIGTERM) when a signal
    stopped the run early, after its checkpoint was written."""
    import dataclasses
    import shlex
    import signal
    import sys
    from sdekit.tasks.train import TrainConfig, dist_env, train
    from sdekit.tasks.train.folder import resumed_config
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    cfg = resumed_config(given)
    s = train(cfg, device=args.device)
    if dist_env()[0] != 0:
        return 128 + signal.Signals[s["signal"]] if s["signal"] else 0
    if s["complete"]:
        print(f"the run in {s['out']} is complete: it is at step {s['step']} of --steps {cfg.steps}; nothing to do "
              f"(a larger --steps continues it)")
        return 0
    if s["removed"]:
        print(f"removed {s['removed']} temporary file(s) that killed writes had left in {s['out']}")
    threads = f"{s['threads']} thread" + ("s" if s["threads"] > 1 else "")
    if s["signal"]:
        print(f"stopped by {s['signal']} at step {s['step']} of {cfg.steps}, checkpoint written to "
              f"{s['out']}/checkpoint.safetensors; continue with: sdekit train --out {shlex.quote(s['out'])} --resume",
              file=sys.stderr)
        return 128 + signal.Signals[s["signal"]]
    done = s["step"] - s["start"]
    segment = f"steps {s['start']} -> {s['step']}" if s["start"] else f"{s['step']} steps"
    print(f"trained {segment} ({done} in this run) in {s['seconds']:.0f} s ({s['img_per_s']:.1f} img/s, {threads}); "
          f"model bundle: {s['out']}/model")
    return 0
