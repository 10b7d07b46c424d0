"""Original checkpoints, written the original way, convert into folders whose model computes the
same function: SDEdit's DDPM (against a re-implementation of its network) and score_sde's NCSN++
(checkpoint_N.pth with EMA shadow parameters, built from a UNet2DModel by the inverse key map)."""
import pickle

import pytest
import torch

import sdekit
from sdekit.apps.cli import main
from sdekit.models.pretrained.convert import convert_checkpoint
from sdekit.models.pretrained.layouts import LAYOUTS, to_original
from sdekit.models.pretrained.presets import PRESETS, Arch

pytest.importorskip("diffusers")
from diffusers import UNet2DModel  # noqa: E402

import ref_ddpm  # noqa: E402
from tiny_unets import randomize  # noqa: E402

F64 = torch.float64
DDPM = Arch(source="sdedit", resolution=8, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
NCSNPP = Arch(source="score_sde", resolution=16, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
              sigma_max=50.0)
FLAGS = ["--resolution", "8", "--ch", "32", "--ch-mult", "1,2", "--num-res-blocks", "1", "--attn", "4"]


def reference_ddpm(seed=0):
    torch.manual_seed(seed)
    net = ref_ddpm.Model(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), resolution=8)
    return randomize(net, seed)


def eps_of(model, x, i):
    """The eps the converted model's network predicts at timestep i (float64, from its score)."""
    abar = model.sde.alphas_cumprod[i]
    return -model.score_fn(x, torch.full((x.shape[0],), i / 999, dtype=F64)) * (1 - abar).sqrt()


def test_sdedit_checkpoint_computes_the_original_function(tmp_path):
    ref = reference_ddpm().double()
    ckpt = tmp_path / "church_outdoor.ckpt"
    torch.save(reference_ddpm().state_dict(), ckpt)            # as SDEdit's checkpoints: a plain state dict
    out = convert_checkpoint(ckpt, DDPM, tmp_path / "converted")
    model = sdekit.load(out, dtype=F64)
    assert model.shape == (3, 8, 8) and model.data_range == (-1.0, 1.0)
    x = torch.randn(2, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(1))
    for i in (0, 400, 999):
        with torch.no_grad():
            want = ref(x, torch.full((2,), i))
        # the timestep embedding is float32 in both (rounded differently): agreement to ~1e-6, where
        # one misplaced weight would differ by O(1)
        torch.testing.assert_close(eps_of(model, x, i), want, rtol=1e-4, atol=1e-5)


def test_module_prefix_and_ddim_training_lists_with_ema(tmp_path):
    raw, ema = reference_ddpm(0), reference_ddpm(1)
    torch.save({"module." + k: v for k, v in ema.state_dict().items()}, tmp_path / "prefixed.ckpt")
    torch.save([{"module." + k: v for k, v in raw.state_dict().items()}, {"state": {}, "param_groups": []}, 3, 1200,
                {"module." + k: v for k, v in ema.state_dict().items()}], tmp_path / "ckpt.pth")
    a = sdekit.load(convert_checkpoint(tmp_path / "prefixed.ckpt", DDPM, tmp_path / "a"), dtype=F64)
    b = sdekit.load(convert_checkpoint(tmp_path / "ckpt.pth", DDPM, tmp_path / "b"), dtype=F64)
    c = sdekit.load(convert_checkpoint(tmp_path / "ckpt.pth", DDPM, tmp_path / "c", ema=False), dtype=F64)
    x = torch.randn(1, 3, 8, 8, dtype=F64)
    with torch.no_grad():
        want_ema, want_raw = ema.double()(x, torch.tensor([500])), raw.double()(x, torch.tensor([500]))
    close = dict(rtol=1e-4, atol=1e-5)                          # float32 timestep embeddings, as above
    torch.testing.assert_close(eps_of(a, x, 500), want_ema, **close)
    torch.testing.assert_close(eps_of(b, x, 500), want_ema, **close)     # EMA by default
    torch.testing.assert_close(eps_of(c, x, 500), want_raw, **close)


def score_sde_checkpoint(path, seed=0):
    """A score_sde checkpoint_N.pth of an NCSN++: 'model' (raw weights, module. prefix, the sigmas
    buffer first, in the original's order), 'ema' (shadow_params of the trainable parameters), and the
    UNet2DModel holding the EMA weights."""
    torch.manual_seed(seed)
    unet = randomize(UNet2DModel(**NCSNPP.unet_config()), seed)
    pairs = LAYOUTS["score_sde"](unet)
    ema = to_original(unet.state_dict(), pairs)
    raw = {k: v + 0.01 * torch.randn_like(v) if k != "all_modules.0.W" else v for k, v in ema.items()}
    model = {"module.sigmas": torch.linspace(0.01, 50, 10), **{"module." + k: v for k, v in raw.items()}}
    shadow = [v for k, v in ema.items() if k != "all_modules.0.W"]
    torch.save({"optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": list(range(len(shadow)))}]},
                "model": model, "ema": {"decay": 0.999, "num_updates": 7, "shadow_params": shadow}, "step": 7}, path)
    return unet


def test_score_sde_checkpoint_with_ema_computes_the_same_function(tmp_path):
    unet = score_sde_checkpoint(tmp_path / "checkpoint_7.pth")
    model = sdekit.load(convert_checkpoint(tmp_path / "checkpoint_7.pth", NCSNPP, tmp_path / "ve"), dtype=F64)
    assert isinstance(model.sde, sdekit.VESDE) and model.sde.sigma_max == 50.0
    assert model.data_range == (0.0, 1.0) and model.shape == (3, 16, 16)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.tensor([0.2, 0.9], dtype=F64)
    with torch.no_grad():
        want = unet.double()(x, model.sde.sigma(t)).sample
    torch.testing.assert_close(model.score_fn(x, t), want, rtol=1e-9, atol=1e-9)
    raw = sdekit.load(convert_checkpoint(tmp_path / "checkpoint_7.pth", NCSNPP, tmp_path / "raw", ema=False), dtype=F64)
    assert not torch.allclose(raw.score_fn(x, t), want, atol=1e-3)


def test_the_ncsnpp_layout_is_score_sde_s_module_order():
    """all_modules as score_sde builds them for celebahq_256: 4 + 28 down + 3 middle + 42 up = 77 modules."""
    from sdekit.models.pretrained.convert import _unet_skeleton
    keys = list(to_original(_unet_skeleton(PRESETS["ncsnpp-celebahq-256"]).state_dict(),
                            LAYOUTS["score_sde"](_unet_skeleton(PRESETS["ncsnpp-celebahq-256"]))))
    assert keys[0] == "all_modules.0.W" and keys[-1] == "all_modules.76.bias"
    assert "all_modules.4.GroupNorm_0.weight" in keys and "all_modules.4.Conv_2.weight" not in keys
    assert "all_modules.31.Conv_0.weight" in keys                      # the last input-skip combiner
    assert "all_modules.33.NIN_0.W" in keys                           # the middle attention block


def test_cli_convert_then_edit(tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    torch.save(reference_ddpm().state_dict(), ckpt)
    out = tmp_path / "ddpm"
    assert main(["convert", str(ckpt), "--from", "sdedit", "--preset", "ddpm-church-256", *FLAGS, "--out", str(out)]) == 0
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    from PIL import Image
    Image.new("RGB", (20, 12), (200, 40, 40)).save(tmp_path / "guide.png")
    assert main(["edit", "--model", str(out), "--guide", str(tmp_path / "guide.png"), "--t0", "0.4", "--steps", "2",
                 "--sampler", "ddim", "--out", str(tmp_path / "e.png")]) == 0
    assert Image.open(tmp_path / "e.png").size[0] > 0
    # an existing output folder is kept unless --overwrite
    assert main(["convert", str(ckpt), "--from", "sdedit", "--preset", "ddpm-church-256", *FLAGS, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["wrong-preset", "wrong-source", "pickle", "not-a-file", "source-mismatch"])
def test_cli_convert_refuses_bad_input(tmp_path, capsys, case):
    ckpt = tmp_path / "model.ckpt"
    torch.save(reference_ddpm().state_dict(), ckpt)
    args = ["convert", str(ckpt), "--from", "sdedit", "--preset", "ddpm-church-256", *FLAGS, "--out", str(tmp_path / "o")]
    marker = tmp_path / "ran"
    if case == "wrong-preset":
        args = args[:6] + ["--out", str(tmp_path / "o")]                  # the 256 px architecture
        message = "not a checkpoint of this architecture"
    elif case == "wrong-source":
        args[3] = "score_sde"
        args[5] = "ncsnpp-church-256"
        message = "not a score_sde checkpoint"
    elif case == "pickle":
        class Evil:
            def __reduce__(self):
                import os
                return (os.system, (f"touch {marker}",))
        ckpt.write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
        message = "weights_only"
    elif case == "not-a-file":
        args[1] = str(tmp_path / "missing.ckpt")
        message = "no such file"
    else:
        args[5] = "ncsnpp-church-256"
        message = "score_sde architecture"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "o" / "model_index.json").exists()


def test_architecture_fields_are_checked():
    arch = PRESETS["ddpm-church-256"]
    assert arch.replace(ch=64, resolution=None).ch == 64                 # None leaves a field alone
    for changes, message in (({"widths": 3}, "unknown architecture field"), ({"resolution": 100}, "divisible"),
                             ({"ch_mult": ()}, "positive"), ({"source": "ldm"}, "unknown checkpoint source")):
        with pytest.raises(sdekit.UserError, match=message):
            arch.replace(**changes)
    with pytest.raises(sdekit.UserError, match="sigma_min < sigma_max"):
        PRESETS["ncsnpp-church-256"].replace(sigma_min=500.0)
