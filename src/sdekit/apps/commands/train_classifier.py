"""sdekit train-classifier: a noise-conditional classifier p_t(y | x) for classifier guidance."""
from sdekit.apps.commands.common import add_overwrite, add_seed, fraction, positive, positive_int


def add_arguments(p):
    p.add_argument("--data", default="digits", help="labelled dataset spec, as for `sdekit train` (default: digits)")
    p.add_argument("--sde", default="vp", help="SDE whose noise levels to train on: vp, ve, subvp, edm (default: vp)")
    p.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    add_overwrite(p, "the classifier in --out")
    p.add_argument("--steps", type=positive_int, default=3000, help="training steps (default: 3000)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per training step (default: 64)")
    p.add_argument("--lr", type=positive, default=2e-3, help="Adam learning rate (default: 0.002)")
    p.add_argument("--ch", type=positive_int, default=16, help="base channels (default: 16)")
    p.add_argument("--holdout", type=fraction, default=0.15,
                   help="fraction in [0, 1) held out to measure accuracy (default: 0.15)")
    add_seed(p)


def run(args):
    import json

    import torch

    from sdekit.data.datasets import load_dataset
    from sdekit.core.errors import UserError
    from sdekit.models.nets.classifier import NoiseClassifier, accuracy_by_noise, save_classifier, train_classifier
    from sdekit.core.sde import get_sde
    from sdekit.apps.commands.common import folder_out

    folder_out(args.out, args.overwrite)
    try:
        sde = get_sde(args.sde)
    except ValueError as e:
        raise UserError(str(e)) from None
    ds = load_dataset(args.data)
    if ds.labels is None or ds.num_classes < 2 or not ds.is_image:
        raise UserError(f"{args.data}: a classifier needs labelled images")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed))
    n_test = int(round(args.holdout * len(ds)))
    test, train = perm[:n_test], perm[n_test:]
    torch.manual_seed(args.seed)
    net = NoiseClassifier(sde, in_channels=ds.shape[0], num_classes=ds.num_classes, ch=args.ch)
    train_classifier(net, ds.x[train], ds.labels[train], steps=args.steps, batch_size=args.batch_size,
                     lr=args.lr, seed=args.seed)
    acc = accuracy_by_noise(net, ds.x[test], ds.labels[test]) if n_test else {}
    save_classifier(args.out, net, ds.shape, ds.data_range or (-1.0, 1.0), args.data,
                    extra={"train": {k: v for k, v in vars(args).items() if k not in ("func", "command", "out")},
                           "holdout_accuracy_by_sigma": acc})
    print(f"classifier -> {args.out}")
    if acc:
        print("held-out accuracy by noise-to-signal ratio sigma: " + json.dumps(acc))
