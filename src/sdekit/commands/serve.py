def add_arguments(p):
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0 = any free port)")
    p.add_argument("--model", default=None, help="model bundle folder (default: the bundled digits model)")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the model (default: torch's choice; 1 is best on a busy machine)")
    p.add_argument("--max-upload-mb", type=float, default=4.0, help="largest accepted upload (default: 4 MB)")
    p.add_argument("--max-waiting", type=int, default=8,
                   help="jobs that may wait behind the running one; more get a 'busy' answer (default: 8)")


def run(args):
    from ..errors import UserError
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must lie in 0..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_waiting < 0 or (args.threads is not None and args.threads < 1):
        raise UserError("--max-upload-mb and --threads must be positive, --max-waiting non-negative")
    from ..web.server import App, Limits, bind
    server = bind(args.host, args.port)          # fail fast on a busy port, before loading the model
    try:
        from ..bundle import load
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        model = load(args.model, device=args.device)
        server.app = App(model, Limits(upload_bytes=int(args.max_upload_mb * 1e6), waiting=args.max_waiting))
        host, port = server.server_address[:2]
        shown = "127.0.0.1" if host == "0.0.0.0" else host
        print(f"sdekit serve: {model.name} {tuple(model.shape)} on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"sdekit serve: listening on {host}: anyone who can reach this machine can use the page")
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        print("stopped")
    finally:
        if server.app is not None:
            server.app.queue.close()
        server.server_close()
