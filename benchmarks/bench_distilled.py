"""The consistency student (mnist-cd) beside its teacher (mnist) at 1, 2 and 20 evaluations, FID in the MNIST judge
against its 5000 held-out reference digits (500 samples, seed 0), the student's class fidelity, and the time of a
t0 = 0.4 edit with the student.

    python benchmarks/bench_distilled.py [--data mnist:../shared/data/mnist]
"""
import torch, time
import sdekit
from sdekit.tasks.judge import held_out, load_judge, predict
from sdekit.tasks.metrics import fid
from sdekit.models.bundle import generate
torch.set_num_threads(1)
data = "mnist:../shared/data/mnist"
judge = load_judge(data); ref = held_out(data, 28).reference
m = sdekit.load("mnist")
for sampler, steps, opts in [("ddim", 1, {}), ("dpm_solver", 1, {}), ("ddim", 2, {}), ("dpm_solver", 2, {}),
                             ("dpm_solver", 2, {"schedule": "uniform"}), ("abm", 2, {}), ("dpm_solver", 20, {"schedule": "uniform"}), ("abm", 20, {})]:
    try:
        x, info = generate(m, 500, sampler, steps, seed=0, return_info=True, **opts)
        print(f"teacher {sampler} {opts} {steps} steps ({info['nfe'] // 500 if info['nfe'] else '?'} NFE/sample): FID {fid(ref, m.to_unit(x).clamp(0, 1), judge):.3f}", flush=True)
    except Exception as e:
        print(sampler, steps, "error", str(e)[:100])
cd = sdekit.load("mnist-cd")
from sdekit.tasks.strokes import pen
from sdekit.tasks.sdedit import sdedit
g, _ = pen(1, 0, 28)
x = cd.from_unit(g)
ts = []
for i in range(6):
    t = time.perf_counter(); out, info = sdedit(cd.sde, cd.score_fn, x, t0=0.4, generator=torch.Generator().manual_seed(i), return_info=True); ts.append(time.perf_counter() - t)
print(f"student edit t0=0.4: {info['nfe']} evaluations, median {sorted(ts)[3] * 1000:.0f} ms (1 thread)")

# the student
n = 500
m = sdekit.load("mnist-cd")
print("consistency model:", getattr(m, "consistency", None), m.config.get("step"))
labels = torch.arange(n) % 10
for steps in (1, 2):
    t = time.time()
    x = generate(m, n, "consistency", steps, seed=0)
    u = m.to_unit(x).clamp(0, 1)
    xc = generate(m, n, "consistency", steps, seed=1, class_labels=labels)
    acc = (predict(judge, m.to_unit(xc).clamp(0, 1)) == labels).float().mean().item()
    print(f"student {steps} step(s): FID {fid(ref, u, judge):.3f}, class fidelity {acc:.3f}, {time.time() - t:.1f} s", flush=True)
