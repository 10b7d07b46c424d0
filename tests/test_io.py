import os

import pytest

from sdekit.core.errors import UserError
from sdekit.core.io import atomic_path, atomic_write_text


def test_atomic_write_has_the_usual_mode(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_refuses_to_overwrite_and_keeps_the_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(UserError):
        atomic_write_text(path, "new", overwrite=False)
    assert path.read_text() == "old"


def test_failure_midway_leaves_nothing_behind(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_public_functions_survive_submodule_imports():
    import importlib
    import sdekit
    modules = {"sdedit": "tasks.sdedit", "likelihood": "tasks.likelihood", "inpaint": "tasks.guidance",
               "load": "models.bundle"}
    for name, module in modules.items():
        importlib.import_module(f"sdekit.{module}")
        assert callable(getattr(sdekit, name)) and not isinstance(getattr(sdekit, name), type(sdekit))
