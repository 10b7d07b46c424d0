"""The demo's masked-edit figure shows an edit with a graded t0 map beside the binary mask."""
import re

import numpy as np
import torch
from PIL import Image

from sdekit.models.bundle import random_model
from sdekit.apps.demo import SMALL, _masked, _Reader, _Run


def test_the_graded_map_keeps_its_top_row_and_costs_what_the_mask_costs(tmp_path):
    m = random_model(ch=4)
    run = _Run(m, SMALL, tmp_path, 2, 0.4, _Reader(m), torch.Generator().manual_seed(0))
    samples = torch.rand(2, *m.shape, generator=torch.Generator().manual_seed(1))
    fig = _masked(run, samples, seed=0)
    assert "the top row differs from the guide by at most 0 (identical)" in fig.caption
    nfe = re.search(r"(\d+) evaluations, as the masked edit's (\d+)", fig.caption)
    assert nfe and nfe.group(1) == nfe.group(2)
    change = [float(v) for v in re.search(r"from the top down is ([\d., ]+);", fig.caption).group(1).split(", ")]
    assert len(change) == 4 and change[0] < max(change[1:])                     # the kept top changes least
    im = np.asarray(Image.open(tmp_path / fig.png).convert("RGB")).astype(int)
    r, _, b = im.reshape(-1, 3).T
    assert ((b - r) > 60).sum() > 0 and ((r - b) > 60).sum() > 0          # the map in colour: blue .. orange
