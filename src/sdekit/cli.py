"""The `sdekit` command: argument parsing only; every command calls the library.

Bad input raises UserError (or ValueError/OSError) in the library; main() prints it on one line
and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys

from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdekit", description="Score-based generative models through SDEs, and SDEdit.")
    sub = p.add_subparsers(dest="command", required=True)

    # --- demo -------------------------------------------------------------------------------
    d = sub.add_parser("demo", help="the main job: samples, SDEdit and toy pictures in one HTML report")
    d.add_argument("--out", default="sdekit-demo", help="output folder (default: sdekit-demo)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)

    # --- toy --------------------------------------------------------------------------------
    t = sub.add_parser("toy", help="the toy pictures: 1-D forward/reverse SDE and ODE flow, 2-D samplers")
    t.add_argument("--out", default="sdekit-toy")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_toy)

    return p


def _demo(args) -> None:
    from .toy import toy_report
    path = toy_report(args.out, seed=args.seed)
    print(f"report: {path}")


def _toy(args) -> None:
    from .toy import toy_report
    path = toy_report(args.out, seed=args.seed)
    print(f"report: {path}")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"sdekit {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
