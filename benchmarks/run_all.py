"""Run every benchmark, one after another, and collect their tables in benchmarks/results/ALL.md.

    python benchmarks/run_all.py [--only samplers,overhead,...] [--quick]

Each benchmark is its own script (see benchmarks/README.md); a missing optional peer is reported in
its table, never fatal. Heavy: run it under `nice` on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
from common import RESULTS, machine, save_text  # noqa: E402

BENCHES = {  # name -> (full runs, quick runs); a run = (script, arguments)
    "samplers": ([("bench_samplers.py", ["--problems", "2d,64d", "--out", "samplers_mix"]),
                  ("bench_samplers.py", ["--problems", "img16", "--n", "400", "--ref-rtol", "1e-8", "--out", "samplers_img"]),
                  ("bench_samplers.py", ["--problems", "uneq2d,uneq64d", "--out", "samplers_uneq"]),
                  ("bench_samplers.py", ["--combine", "samplers_mix,samplers_img,samplers_uneq", "--out", "samplers"])],
                 [("bench_samplers.py", ["--quick", "--problems", "2d", "--nfes", "5,10", "--out", "samplers"])]),
    "overhead": ([("bench_overhead.py", ["--batch", "16", "--nfe", "10", "--repeats", "2"])],
                 [("bench_overhead.py", ["--batch", "2", "--nfe", "4", "--repeats", "1", "--model", "random"])]),
    "likelihood": ([("bench_likelihood.py", ["--n", "64"])],
                   [("bench_likelihood.py", ["--problems", "2d", "--n", "16", "--max-steps", "16"])]),
    "train": ([("bench_train.py", ["--steps", "8", "--rounds", "4"])], [("bench_train.py", ["--steps", "2", "--batch", "8", "--rounds", "1"])]),
    "sdedit": ([("bench_sdedit.py", ["--n", "16", "--t0", "0.3,0.6"])], [("bench_sdedit.py", ["--quick"])]),
    "t0map": ([("bench_t0map.py", ["--n", "16", "--repeats", "7"])], [("bench_t0map.py", ["--quick"])]),
    "recipes": ([("bench_recipes.py", ["--minutes", "3", "--n", "500"])],
                [("bench_recipes.py", ["--minutes", "0.02", "--n", "16", "--steps", "4"])]),
    "pretrained": ([("bench_pretrained.py", ["--steps", "2", "--repeats", "3", "--threads", "1"])],
                   [("bench_pretrained.py", ["--quick", "--steps", "2", "--repeats", "1"])]),
    "throughput": ([("bench_throughput.py", ["--batches", "1,16,64", "--repeats", "5"])],
                   [("bench_throughput.py", ["--batches", "1", "--repeats", "1"])]),
    "compile": ([("bench_compile.py", ["--repeats", "3", "--threads", "1"])],
                [("bench_compile.py", ["--quick", "--no-compile", "--repeats", "1"])]),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(BENCHES))
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check that everything runs")
    args = ap.parse_args(argv)
    results = RESULTS
    if args.quick and "SDEKIT_BENCH_RESULTS" not in os.environ:    # keep the real tables
        results = Path(tempfile.mkdtemp(prefix="sdekit-bench-"))
        os.environ["SDEKIT_BENCH_RESULTS"] = str(results)
        common.RESULTS = results
    parts, failed = [f"# sdekit benchmarks\n\nMachine: {machine()}\n"], []
    for name in args.only.split(","):
        runs = BENCHES[name][1 if args.quick else 0]
        t0, rc = time.perf_counter(), 0
        for script, extra in runs:
            cmd = [sys.executable, str(HERE / script)] + extra
            print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
            rc = rc or subprocess.call(cmd)
        took = time.perf_counter() - t0
        md = results / f"{name}.md"
        if rc != 0:
            failed.append(name)
        body = md.read_text() if rc == 0 and md.exists() else f"(failed with exit code {rc})\n"
        parts.append(f"## {name} ({took:.0f} s)\n\n{body}")
    save_text("ALL.md", "\n".join(parts))
    print(f"wrote {results / 'ALL.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
