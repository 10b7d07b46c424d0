"""Run every benchmark, one after another, and collect their tables in benchmarks/results/ALL.md.

    python benchmarks/run_all.py [--only samplers,overhead,...] [--quick]

Each benchmark is its own script (see benchmarks/README.md); a missing optional peer is reported in
its table, never fatal. Heavy: run it under `nice` on a shared machine.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine, save_text  # noqa: E402

BENCHES = {  # name -> (script, full arguments, quick arguments)
    "samplers": ("bench_samplers.py", [], ["--quick", "--problems", "2d", "--nfes", "5,10"]),
    "overhead": ("bench_overhead.py", ["--batch", "16", "--repeats", "3"],
                 ["--batch", "2", "--nfe", "4", "--repeats", "1", "--model", "random"]),
    "likelihood": ("bench_likelihood.py", [], ["--problems", "2d", "--n", "16", "--max-steps", "16"]),
    "train": ("bench_train.py", [], ["--seconds", "5"]),
    "sdedit": ("bench_sdedit.py", [], ["--quick"]),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(BENCHES))
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check that everything runs")
    args = ap.parse_args(argv)
    parts, failed = [f"# sdekit benchmarks\n\nMachine: {machine()}\n"], []
    for name in args.only.split(","):
        script, full, quick = BENCHES[name]
        if not (HERE / script).exists():
            parts.append(f"## {name}\n\n(no script {script})\n")
            continue
        cmd = [sys.executable, str(HERE / script)] + (quick if args.quick else full)
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        took = time.perf_counter() - t0
        md = RESULTS / f"{name}.md"
        if rc != 0:
            failed.append(name)
        body = md.read_text() if rc == 0 and md.exists() else f"(failed with exit code {rc})\n"
        parts.append(f"## {name} ({took:.0f} s)\n\n{body}")
    save_text("ALL.md", "\n".join(parts))
    print(f"wrote {RESULTS / 'ALL.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
