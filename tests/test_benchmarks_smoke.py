"""The benchmark's exact reference against a closed form, and one tiny run of the sampler benchmark."""
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
common = pytest.importorskip("common")


def test_reference_ode_matches_closed_form_for_one_gaussian():
    # p_0 = N(mu, v I): the flow keeps (y - mu) / sqrt(v + sigma^2) fixed, so
    # y(0) = mu + sqrt(v / (v + sigma0^2)) (y0 - mu).
    from sdekit import GaussianMixture
    mu, v, sig0 = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64), 0.04, 80.0
    gmm = GaussianMixture(mu, math.sqrt(v))
    y0 = sig0 * torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, _ = common.reference(gmm, y0, sig0)
    exact = mu + math.sqrt(v / (v + sig0 ** 2)) * (y0 - mu)
    assert torch.allclose(x, exact, atol=1e-7)


def test_exact_denoiser_agrees_with_sdekit_denoiser_under_vp():
    from sdekit.core.denoisers import ScoreDenoiser as Denoiser
    from sdekit.core.sde import VPSDE
    gmm = common.mixture("2d")
    y = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sde = VPSDE()
    for sig in (0.05, 1.0, 30.0):
        assert torch.allclose(common.ExactDenoiser(gmm)(y, sig), Denoiser(sde, gmm.score_fn(sde))(y, sig), atol=1e-8)


def test_k_diffusion_loader_leaves_no_placeholder_module_behind():
    import importlib.util
    import sys
    common.load_k_diffusion_sampling()
    assert all(n not in sys.modules or sys.modules[n].__spec__ is not None
               for n in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"))
    importlib.util.find_spec("torchvision")        # a placeholder module without a spec makes this raise


def test_sampler_benchmark_smoke(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    bench = pytest.importorskip("bench_samplers")
    results = bench.main(["--quick", "--problems", "2d", "--sdes", "ve", "--nfes", "10,40", "--out", "smoke"])
    assert (tmp_path / "smoke.md").exists()
    by = {(r["sampler"], r["budget"]): r for r in results}
    for name in ("sdekit dpm_solver", "sdekit heun"):         # second order: error falls with NFE
        assert by[(name, 40)]["median"] < 0.3 * by[(name, 10)]["median"]
    assert by[("sdekit abm", 10)]["median"] < 0.5 * by[("sdekit dpm_solver", 10)]["median"]
    if ("k-diff heun", 10) in by:                             # same Karras grid, same method
        assert abs(by[("k-diff heun", 10)]["median"] - by[("sdekit heun", 10)]["median"]) < 1e-6


def test_unequal_mixtures_have_the_widths_and_weights_the_benchmark_documents():
    two, big = common.mixture("uneq2d"), common.mixture("uneq64d")
    assert two.means.tolist() == [[-2.5, -0.5], [0.0, 2.0], [2.0, -1.5], [1.0, 0.5]]
    assert two.stds.tolist() == pytest.approx([0.2, 0.5, 0.35, 0.6])
    assert two.weights.tolist() == pytest.approx([0.15, 0.35, 0.2, 0.3])
    assert tuple(big.means.shape) == (8, 64)
    assert float(big.stds.max() / big.stds.min()) == pytest.approx(12.0)
    assert float(big.weights.max() / big.weights.min()) == pytest.approx(8.0)


def test_model_quality_reports_each_sampler_with_its_options(tmp_path):
    """One tiny run on the digits model: a row per listed sampler, its options applied (heun's churn
    draws other samples than plain heun from the same seed), the real-vs-real floor beside them."""
    import json
    bench = pytest.importorskip("bench_model_quality")
    out = tmp_path / "mq.json"
    bench.main(["--model", "digits", "--data", "digits", "--n", "20", "--samplers", "heun:3,heun:3:churn=5",
                "--out", str(out)])
    res = json.loads(out.read_text())
    rows = res["samplers"]
    assert [r["sampler"] for r in rows] == ["heun:3", "heun:3:churn=5"]
    assert all(r["nfe_per_sample"] == 5 and 0 <= r["class_fidelity"]["rate"] <= 1 for r in rows)
    assert rows[0]["unconditional"]["kid"] != rows[1]["unconditional"]["kid"]
    assert "real_vs_real" in res and res["t0_default"] > 0
