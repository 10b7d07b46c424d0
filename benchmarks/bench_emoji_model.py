"""The bundled colour model (emoji): unconditional FID / KID and class-conditional category fidelity in the emoji
judge against the held-out split (300 samples, DPM-Solver++ 20 steps), beside real-vs-real and the judge's reading of
held-out real emoji; writes a grid of class-conditional samples to /tmp/emoji_samples.png.

    python benchmarks/bench_emoji_model.py [MODEL]      # MODEL: a bundle folder (default: the shipped "emoji")
"""
import sys
import torch, time
import sdekit
from sdekit.tasks.judge import held_out, load_judge, predict
from sdekit.tasks.metrics import fid, kid
from sdekit.models.bundle import generate
from sdekit.data.datasets import save_grid
torch.set_num_threads(2)
data = "emoji:../shared/data/emoji"
judge = load_judge(data); h = held_out(data, 32)
m = sdekit.load(sys.argv[1] if len(sys.argv) > 1 else "emoji")
n = 300
t = time.time()
x = m.to_unit(generate(m, n, "dpm_solver", 20, seed=0)).clamp(0, 1)
labels = torch.arange(n) % 9
xc = m.to_unit(generate(m, n, "dpm_solver", 20, seed=1, class_labels=labels)).clamp(0, 1)
acc = (predict(judge, xc) == labels).float().mean().item()
real_acc = (predict(judge, h.real) == h.real_labels).float().mean().item()
# per-category read rate on real held-out, averaged over categories (balanced like the samples)
per = [(predict(judge, h.real[h.real_labels == c]) == c).float().mean().item() for c in range(9) if (h.real_labels == c).any()]
print(f"step {m.config['step']}: FID uncond {fid(h.reference, x, judge):.3f} (n={n}); real vs real FID {fid(h.reference, h.real, judge):.3f}")
print(f"KID uncond {kid(h.reference, x, judge).mean:.4f}; real vs real {kid(h.reference, h.real, judge).mean:.4f}")
print(f"class-conditional samples read as their category: {acc:.3f}; held-out real read: {real_acc:.3f} (category-balanced {sum(per)/len(per):.3f})")
save_grid("/tmp/emoji_samples.png", xc[:81], nrow=9)
print(f"{time.time() - t:.0f} s")
