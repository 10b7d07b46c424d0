"""One tiny run of the t0-map benchmark: it runs and finds the evaluations of plain SDEdit."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
common = pytest.importorskip("common")


def test_t0map_benchmark_smoke(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    import bench_t0map
    bench_t0map.main(["--quick"])
    out = json.loads((tmp_path / "t0map.json").read_text())
    assert out["ratio"]["nfe"] == 1.0 and (tmp_path / "t0map.md").is_file()
