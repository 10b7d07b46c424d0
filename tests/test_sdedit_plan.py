"""SDEdit's plan (sdekit.tasks.sdedit.plan_edit): every choice made once, from the keywords, the policy and the
calibration a model's score view declares (no model object behind the view)."""
import math

import torch

from sdekit.core.sde import EDMSDE, VPSDE
from sdekit.models.bundle import random_model
from sdekit.policy import EDIT, T0
from sdekit.tasks.plans import EditPlan
from sdekit.tasks.sdedit import REFERENCE_SDE, plan_edit, sdedit, sdedit_time


def _model(settings=None):
    m = random_model(shape=(1, 8, 8), num_classes=3)
    if settings is not None:
        m.config["sdedit"] = settings
    return m


def test_the_view_declares_its_models_calibration_and_condition():
    m = _model({"t0": 0.3, "t0_unconditional": 0.2})
    plain, cond = m.score_fn, m.conditional(torch.tensor([1, 2]), 2.0)
    assert not hasattr(plain, "model") and plain.calibration == m.calibration
    assert plain.class_labels is None and cond.guidance == 2.0 and cond.class_labels.tolist() == [1, 2]
    guide = torch.zeros(2, 1, 8, 8)
    p = plan_edit(m.sde, plain, guide)
    q = plan_edit(m.sde, cond, guide)
    assert isinstance(p, EditPlan) and (p.t0, q.t0) == (0.2, 0.3)            # plain edit's t0, conditioned edit's
    assert p.sampler == EDIT.sampler and p.steps == 20 and q.guidance == 2.0  # 0.2 x 500 x 0.2
    assert plan_edit(m.sde, lambda x, t: -x, guide).t0 == T0.default           # a bare score function: the policy's
    assert plan_edit(m.sde, lambda x, t: -x, guide, model=m).t0 == 0.2


def test_sdedit_runs_its_plan():
    m = _model({"t0": 0.25})
    guide = torch.zeros(1, 1, 8, 8)
    _, info = sdedit(m.sde, m.conditional(1), guide, steps=2, generator=torch.Generator().manual_seed(0),
                     return_info=True)
    assert (info["t0"], info["steps"], info["sampler"], info["nfe"]) == (0.25, 2, EDIT.sampler, 2)
    assert info["t"] == 0.25


def test_start_time_is_t0_on_the_reference_schedule_and_sigma_matched_elsewhere():
    for t0 in (0.1, 0.3, 0.77, 1.0):
        assert sdedit_time(VPSDE(0.1, 20.0, N=500), t0) == t0                    # its N does not change sigma(t)
        ref = float(REFERENCE_SDE.sigma(torch.tensor([t0], dtype=torch.float64)))
        assert math.isclose(sdedit_time(EDMSDE(0.002, 200.0), t0), ref, rel_tol=1e-12)   # EDM: sigma(t) = t
        other = VPSDE(0.1, 21.0)                              # a different schedule reaching every level
        assert math.isclose(float(other.sigma(torch.tensor([sdedit_time(other, t0)], dtype=torch.float64))), ref,
                            rel_tol=1e-9)
