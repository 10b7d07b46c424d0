from sdekit.apps.commands.common import add_model, load_model


def add_arguments(p):
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0 = any free port)")
    add_model(p, repeat=True,
              help="a bundled model's name, a model bundle folder, or a diffusers folder (as written by sdekit "
                   "convert); repeat it to serve several, each at /m/<name>/ with a menu to switch, the first also at / "
                   "(default: every bundled model installed, the default model (MNIST) first)")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the model (default: $OMP_NUM_THREADS, else the CPUs the load "
                        "average leaves free)")
    p.add_argument("--max-upload-mb", type=float, default=4.0, help="largest accepted upload (default: 4 MB)")
    p.add_argument("--max-waiting", type=int, default=8,
                   help="jobs that may wait behind the running one; more get a 'busy' answer (default: 8)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name the page may be opened by, besides localhost and IP addresses (repeatable)")


def run(args):
    from sdekit.core.errors import UserError
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must lie in 0..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_waiting < 0 or (args.threads is not None and args.threads < 1):
        raise UserError("--max-upload-mb and --threads must be positive, --max-waiting non-negative")
    from sdekit.apps.web.app import host_name
    for name in args.allow_host:
        if host_name(name) != name.lower().rstrip("."):
            raise UserError(f"--allow-host takes a host name such as my-pc.lan, got {name!r}")
    import argparse

    from sdekit.apps.web.server import Limits, bind, make_app
    server = bind(args.host, args.port)          # fail fast on a busy port, before loading the model
    try:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        from sdekit.models.bundle import installed
        models = [load_model(argparse.Namespace(**{**vars(args), "model": name}), device=args.device)
                  for name in (args.model or installed() or [None])]
        limits = Limits(upload_bytes=int(args.max_upload_mb * 1e6), waiting=args.max_waiting)
        server.app = make_app(models, limits, host=args.host, allow_hosts=args.allow_host)
        host, port = server.server_address[:2]
        shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        where = "" if len(models) == 1 else "each at /m/<name>/, "
        print(f"sdekit serve: {', '.join(f'{m.name} {tuple(m.shape)}' for m in models)} on http://{shown}:{port}/ "
              f"({where}Ctrl-C to stop)", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"sdekit serve: listening on {host}: anyone who can reach this machine can use the page")
        server.serve_forever()                   # until Ctrl-C or SIGTERM
        print("stopped", flush=True)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        if not server.server_close():            # the running job did not stop within Limits.stop_seconds
            import os
            import sys
            print("sdekit serve: the running job did not stop in time; exiting without it", file=sys.stderr, flush=True)
            os._exit(0)                          # no interpreter shutdown under a thread inside the model
