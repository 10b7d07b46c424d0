"""sdekit train-features: the judge (features for KID / FID, classes for class fidelity) of a dataset."""
from sdekit.apps.commands.common import add_seed, positive, positive_int


def add_arguments(p):
    p.add_argument("--data", default="digits",
                   help="digits, mnist:DIR, emoji:DIR, or any labelled image data (folder:PATH with one sub-folder per "
                        "class, cifar10:DIR, ...: a judge for `sdekit evaluate --judge`) (default: digits)")
    p.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="passes over the training images (default: the dataset's own: digits 40, MNIST 4, emoji 30, other data 20)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per training step (default: 64)")
    p.add_argument("--lr", type=positive, default=2e-3, help="Adam learning rate (default: 0.002)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="other data only: the side of the images the judge reads, the model's (default: the data's own)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="other data only: 1 (grey) or 3 (RGB), the model's (default: the data's own)")
    add_seed(p)
    p.add_argument("--float16", action="store_true", help="store the weights in float16 (half the size)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1: bitwise reproducible)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing network in --out")


def run(args):
    from pathlib import Path

    import torch

    from sdekit.core.errors import UserError
    from sdekit.data.datasets import data_kind
    from sdekit.tasks.judge import JUDGED, judged, train_features

    if data_kind(args.data) in JUDGED:
        judged(args.data)
    if (args.epochs is not None and args.epochs < 1) or args.batch_size < 1 or not args.lr > 0 or args.threads < 1:
        raise UserError("--epochs, --batch-size, --lr and --threads must be positive")
    if not args.overwrite and any((Path(args.out) / f).exists() for f in ("config.json", "model.safetensors")):
        raise UserError(f"{args.out} holds a network; pass --overwrite to replace it")
    from sdekit.core.io import check_writable
    check_writable(args.out)                     # a full disk or read-only folder: refused before the training
    torch.set_num_threads(args.threads)
    cfg = train_features(args.out, args.epochs, args.seed, data=args.data, batch_size=args.batch_size, lr=args.lr,
                         dtype=torch.float16 if args.float16 else torch.float32, size=args.size,
                         channels=args.channels)
    print(f"features -> {args.out}: test accuracy {cfg['test_accuracy']:.4f} on {cfg['test_images']} images")
