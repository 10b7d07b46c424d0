"""The policy of defaults (sdekit.policy): one place for every task's default sampler, steps rule and t0, read
by the library, the CLI, the page and the README; the input checks it comes with (sdekit.core.checks)."""
import ast
import inspect
import math
from pathlib import Path

import pytest
import torch

import sdekit
from sdekit import policy
from sdekit.core.checks import check_count, check_t0
from sdekit.core.errors import UserError
from sdekit.solvers.registry import ALIASES, REGISTRY

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "sdekit"
OWNERS = {"policy.py", "solvers/registry.py", "solvers/samplers.py"}   # the policy and the sampler records
NOT_DEFAULTS = {("tasks/likelihood.py", "ode"),   # decode's solver "rk45" is the registry's adaptive "ode" sampler
                ("solvers/gits.py", "dpm_solver")}   # GITS's teacher is DPM-Solver++ by the method, not a default


def _sampler_word(name) -> bool:
    return isinstance(name, str) and "sampler" in name.lower()


def default_sampler_literals(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every sampler name written as a string where a default sampler is set: a parameter
    default, a keyword argument or an assignment whose name says "sampler", or an argument of a call of a
    function whose name does (add_sampler(p, "pc"), default_sampler(model, "abm"))."""
    names = set(REGISTRY) | set(ALIASES)
    tree = ast.parse(path.read_text())
    parent = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in names):
            continue
        up, hit = parent.get(node), False
        while up is not None and not isinstance(up, ast.stmt):
            if isinstance(up, ast.keyword) and _sampler_word(up.arg):
                hit = True
            if isinstance(up, ast.Call):
                f = up.func
                hit |= _sampler_word(f.id if isinstance(f, ast.Name) else getattr(f, "attr", None))
            if isinstance(up, ast.arguments):
                pos = up.posonlyargs + up.args
                pairs = list(zip(pos[len(pos) - len(up.defaults):], up.defaults)) + list(zip(up.kwonlyargs, up.kw_defaults))
                hit |= any(d is node and _sampler_word(a.arg) for a, d in pairs)
            up = parent.get(up)
        if isinstance(up, (ast.Assign, ast.AnnAssign)):
            targets = up.targets if isinstance(up, ast.Assign) else [up.target]
            hit |= any(_sampler_word(t.id if isinstance(t, ast.Name) else getattr(t, "attr", None)) for t in targets)
        if hit:
            found.append((node.lineno, node.value))
    return found


def test_no_default_sampler_is_written_outside_the_policy():
    bad = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).as_posix()
        if rel not in OWNERS:
            bad += [f"{rel}:{line}: {name!r}" for line, name in default_sampler_literals(p)
                    if (rel, name) not in NOT_DEFAULTS]
    assert bad == [], "default samplers written outside sdekit/policy.py: " + "; ".join(bad)


def test_the_grep_finds_what_it_looks_for(tmp_path):
    """The check above can fail: each way of writing a default is found, a comparison is not."""
    src = tmp_path / "m.py"
    src.write_text('def f(x, sampler: str = "pc"):\n    return x\n'
                   'SAMPLER = "abm"\n'
                   'y = sample(x, sampler="heun")\n'
                   'add_sampler(p, "reverse_diffusion")\n'
                   'ok = spec.name == "heun"\n')
    assert sorted(line for line, _ in default_sampler_literals(src)) == [1, 3, 4, 5]


def test_the_policy_imports_nothing_above_the_core():
    tree = ast.parse((SRC / "policy.py").read_text())
    mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
        [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert all(not m.startswith("sdekit") or m.startswith("sdekit.core") for m in mods if m), mods


def test_every_default_names_a_sampler_of_the_registry():
    for t in (policy.SAMPLE, policy.MODEL_SAMPLE, policy.EDIT, policy.INPAINT, policy.COLORIZE,
              policy.TRAINING_PICTURES, policy.DEMO_SAMPLE):
        assert sdekit.get_sampler(t.sampler).name == t.sampler
    assert sdekit.get_sampler(policy.CONSISTENCY).name == policy.CONSISTENCY


def test_defaults_keep_their_values_and_the_library_reads_them():
    """DESIGN.md's sdekit.sample(sampler="pc") and the model-level "abm" stay what they were, in one place."""
    from sdekit.models.model import Model
    from sdekit.tasks.guidance import impute
    from sdekit.tasks.likelihood import likelihood
    assert (policy.SAMPLE.sampler, policy.MODEL_SAMPLE.sampler, policy.EDIT.sampler, policy.INPAINT.sampler,
            policy.COLORIZE.sampler) == ("pc", "abm", "reverse_diffusion", "pc", "pc")
    assert inspect.signature(sdekit.sample).parameters["sampler"].default == "pc"
    assert inspect.signature(likelihood).parameters["solver"].default == policy.LIKELIHOOD.sampler == "rk45"
    assert inspect.signature(Model.sample).parameters["sampler"].default is None
    assert inspect.signature(impute).parameters["sampler"].default is None


def test_a_consistency_model_uses_the_consistency_sampler_for_every_task():
    class CM:
        consistency = True

    class Holder:
        denoiser = CM()
    for t in policy.TASKS.values():
        assert policy.default_sampler(t, Holder()) == policy.CONSISTENCY
        assert policy.default_sampler(t, CM()) == policy.CONSISTENCY
        assert policy.default_sampler(t, lambda x, t: x) == t.sampler


def test_edit_steps_rule_per_unit_of_t0():
    """100 t0 for reverse diffusion (a fifth of its 500 per unit), at least 4; fast solvers keep theirs."""
    from sdekit.tasks.sdedit import sdedit_steps
    assert sdedit_steps("reverse_diffusion", 0.3) == 30 and sdedit_steps("reverse_diffusion", 1.0) == 100
    assert sdedit_steps("reverse_diffusion", 0.01) == policy.EDIT_STEPS.min_steps == 4
    assert sdedit_steps("ancestral", 0.47) == math.ceil(0.2 * 500 * 0.47) == 47
    assert sdedit_steps("heun", 0.3) == 20 and sdedit_steps("langevin", 0.3) == 1000


def test_calibration_reads_the_bundle_config():
    cal = policy.Calibration.from_config({"sdedit": {"t0": 0.3, "t0_unconditional": 0.2, "class": "auto",
                                                     "guidance": 2}})
    assert (cal.default_t0(True), cal.default_t0(False), cal.read_class, cal.guidance) == (0.3, 0.2, True, 2)
    assert policy.Calibration.from_config({}).default_t0() == policy.T0.default == 0.5
    assert policy.Calibration.from_config({"sdedit": {"t0": 1.5}}).default_t0() == 0.5      # out of range: none
    assert policy.Calibration.from_config({"sdedit": {"t0": 0.3}}).default_t0(False) == 0.3


def test_readme_policy_table_is_the_policy():
    readme = (ROOT / "README.md").read_text()
    flat = "\n".join(line.strip() for line in readme.splitlines())
    assert policy.markdown_table() in flat


def test_cli_defaults_and_help_come_from_the_policy():
    from sdekit.apps.cli import _parser
    parser = _parser()
    sub = {a.dest: a for a in parser._actions if a.dest == "command"}["command"].choices
    for cmd, task in (("sample", policy.MODEL_SAMPLE), ("edit", policy.EDIT), ("inpaint", policy.INPAINT),
                      ("colorize", policy.COLORIZE), ("evaluate", policy.EDIT)):
        p = sub[cmd]
        assert p.get_default("sampler_task") is task
        help_text = next(a.help for a in p._actions if a.dest == "sampler")
        assert f"(default: {task.sampler};" in help_text
    assert sub["likelihood"].get_default("solver") == policy.LIKELIHOOD.sampler


# ---- the checks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, -1, 1.5, True, "x", None])
def test_check_count_refuses(value):
    with pytest.raises(UserError, match="steps must be a positive integer"):
        check_count(value, "steps")


def test_check_count_and_t0_accept():
    assert check_count(3.0, "steps") == 3 and check_count(0, "resample", minimum=0) == 0
    assert check_t0(1) == 1.0 and check_t0(torch.tensor(0.25)) == 0.25
    m = check_t0(torch.tensor([[0.0, 0.5]]), torch.zeros(2, 1, 2))
    assert m.dtype == torch.float64 and m.max() == 0.5


@pytest.mark.parametrize("t0, pattern", [(0, "t0 must lie in"), (1.01, "t0 must lie in"), (math.nan, "t0 must lie in"),
                                         ("x", "t0 must be a number")])
def test_check_t0_refuses(t0, pattern):
    with pytest.raises(UserError, match=pattern):
        check_t0(t0, torch.zeros(1, 1, 2))
