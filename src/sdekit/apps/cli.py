"""The `sdekit` command: argument parsing only; every command calls the library.

Each subcommand lives in ``sdekit.apps.commands.<name>`` with two functions:
``add_arguments(parser)`` (cheap: argparse only) and ``run(args)`` (imports the library lazily).
Bad input is refused on one line with exit code 2: argparse's own errors (types and ranges are
checked while parsing), UserError from the commands and the library, and the file-system errors
of the user's paths (missing, a folder, no permission, disk full). Anything else is a bug in
sdekit and ends in a traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings

from sdekit.core.errors import SlowPrecisionWarning, UserError

# name -> (module under sdekit.apps.commands, one-line help)
COMMANDS = {
    "demo": ("demo", "the main job: samples, SDEdit edits and toy pictures in one HTML report"),
    "toy": ("toy", "the toy pictures: 1-D forward/reverse SDE and ODE flow, 2-D samplers"),
    "train": ("train", "train a score network (torchrun-compatible)"),
    "sample": ("sample", "draw samples from a model into a PNG grid"),
    "edit": ("edit", "SDEdit: turn a stroke painting or an edited image into a realistic image"),
    "evaluate": ("evaluate", "realism (KID) / faithfulness (L2) over a t0 sweep, with plots"),
    "likelihood": ("likelihood", "bits/dim through the probability-flow ODE"),
    "inpaint": ("inpaint", "fill the masked region of an image"),
    "colorize": ("colorize", "colorize a grey image"),
    "train-classifier": ("train_classifier", "train a noise-conditional classifier for guidance"),
    "train-features": ("train_features", "train the judge of a dataset: features for KID/FID, class fidelity"),
    "serve": ("serve", "the stroke-painting web page"),
    "convert": ("convert", "an original SDEdit or score_sde checkpoint into a folder sdekit loads"),
    "export": ("export", "a model whose network is a diffusers UNet2DModel as a diffusers folder (sdekit's own U-Net is refused, with the reason)"),
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``sdekit <command>: error: <message>``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from sdekit import __version__
    p = Parser(prog="sdekit", description="Score-based generative models through SDEs, and SDEdit.")
    p.add_argument("--version", action="version", version=f"sdekit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"sdekit.apps.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"sdekit.apps.commands.{module}":
                raise
            continue
        sp = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.run)
    return p


ERRORS = (UserError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG}       # the user's disk or path, not a bug


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is bad input (printed on one line, exit 2) rather than a bug (a traceback)."""
    return isinstance(e, ERRORS) or (isinstance(e, OSError) and e.errno in FULL)


def main(argv=None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:                   # --help (0), or an argument refused on one line (2)
        return 0 if e.code is None else int(e.code)
    try:
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def one_line(message, category, *rest, **kw):   # sdekit's own warnings: one line, as errors are
                if issubclass(category, SlowPrecisionWarning):
                    print(f"sdekit {args.command}: warning: {message}", file=sys.stderr)
                else:
                    shown(message, category, *rest, **kw)
            warnings.showwarning = one_line
            code = args.func(args)       # a command may return its exit code (None: 0)
    except (UserError, OSError) as e:
        if not is_user_error(e):
            raise
        text = str(e).strip()
        msg = text.splitlines()[0] if text else type(e).__name__
        print(f"sdekit {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
