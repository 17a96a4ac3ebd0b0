"""The render benchmark still runs (tiny sizes; speed is measured by `make bench`, never here)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_render.py"


def test_bench_render_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_render", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.main(["--subscribers", "40", "--baseline-sample", "2"])
    assert figures["subscribers"] == 40
    assert figures["avg_html_plus_text_kb"] > 10  # real bodies were produced
    assert capsys.readouterr().out.count("BENCH ") == 4
