"""benchmarks/run.py's table from sample BENCH lines (the benchmarks themselves are not run here)."""

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"

SAMPLE = """\
== something the benchmark printed
BENCH {"benchmark": "send", "metric": "digest send, smtp: messages per second", "value": 3314, "unit": "msg/s", "note": "65% of the bare loop"}
BENCH {"benchmark": "memory", "metric": "peak, 100,000 subscribers", "value": 107.2, "unit": "MiB", "note": "a | b"}
BENCH {"benchmark": "collect", "metric": "first collect", "value": 1.234, "unit": "s"}
BENCH {"benchmark": "render", "metric": "speed-up vs an MJML compile per reader", "value": 2371.6, "unit": "x", "note": ""}
BENCH {"benchmark": "send", "metric": "SendGrid API calls", "value": 100, "unit": "calls", "note": "4 topic sets"}
BENCH {"benchmark": "custom", "metric": "stories", "value": 9876, "unit": ""}
BENCH {"benchmark": "cli collect", "metric": "first digest collect, piped", "value": 5.2, "unit": "s", "peer": "rss2email 3.14: 51.0 s", "target": "<= 3.0 s", "met": false, "note": "200 feeds"}
BENCH {"benchmark": "cli startup", "metric": "digest --help", "value": 0.21, "unit": "s", "peer": "python -c pass: 0.012 s", "target": "<= 0.3 s", "met": true}
not a bench line BENCH {}
"""  # noqa: E501


@pytest.fixture(scope="module")
def run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_lines_are_parsed_and_other_output_ignored(run: ModuleType) -> None:
    results = run.parse_bench(SAMPLE)
    assert len(results) == 8
    assert results[0]["value"] == 3314


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (100_000, "msg/s", "100,000 msg/s"),
        (107.24, "MiB", "107 MiB"),
        (12.345, "s", "12.3 s"),
        (1.234, "s", "1.23 s"),
        (2371.6, "x", "2,372x"),
        (3.14, "x", "3.14x"),
        (0.946, "x", "0.95x"),
        (9876, "", "9,876"),
        ("n/a", "", "n/a"),
    ],
)
def test_values_read_in_their_units(run: ModuleType, value: object, unit: str, text: str) -> None:
    assert run.format_value(value, unit) == text


def test_rows_are_grouped_by_area_in_pipeline_order(run: ModuleType) -> None:
    rows = run.table_rows(run.parse_bench(SAMPLE))
    assert [area for area, *_ in rows if area] == [
        "Start-up of a command (whole process)",
        "Collect as the user runs it (whole `digest collect` process)",
        "Collection (in process)",
        "Rendering",
        "Sending",
        "Memory of a send",
        "custom",
    ]
    sending = [r for r in rows if r[1] in ("digest send, smtp: messages per second", "SendGrid API calls")]
    assert sending == [
        ("Sending", "digest send, smtp: messages per second", "3,314 msg/s", "", "", "65% of the bare loop"),
        ("", "SendGrid API calls", "100 calls", "", "", "4 topic sets"),
    ]


def test_markdown_table_has_one_row_per_result_and_escapes_pipes(run: ModuleType) -> None:
    table = run.markdown_table(run.table_rows(run.parse_bench(SAMPLE)))
    lines = table.splitlines()
    assert lines[0] == "| area | measure | value | peer or floor | target | note |"
    assert len(lines) == 2 + 8
    assert "| **Memory of a send** | peak, 100,000 subscribers | 107 MiB |  |  | a \\| b |" in lines
    assert all(line.count("|") - line.count("\\|") == 7 for line in lines)


def test_each_figure_stands_beside_its_peer_or_floor_and_its_target(run: ModuleType) -> None:
    rows = run.table_rows(run.parse_bench(SAMPLE))
    assert ("", "digest --help", "0.21 s", "python -c pass: 0.012 s", "<= 0.3 s: met", "")[1:] in [
        row[1:] for row in rows
    ]
    collect = next(row for row in rows if row[1] == "first digest collect, piped")
    assert collect[2:5] == ("5.20 s", "rss2email 3.14: 51.0 s", "<= 3.0 s: NOT met")
    text = run.text_table(rows)
    assert "(against rss2email 3.14: 51.0 s; target <= 3.0 s: NOT met)" in text


def test_heading_names_the_machine_date_and_load(run: ModuleType) -> None:
    top = run.heading(datetime(2026, 11, 25, 7, 0, tzinfo=UTC), ["1.00 0.50 0.20", "2.00 1.00 0.50"], True)
    assert top.startswith("Machine: ")
    assert "2026-11-25 07:00 UTC" in top
    assert "1.00 0.50 0.20 at the start, 2.00 1.00 0.50 at the end" in top
    assert "Quick mode" in top
    assert "Speed check" not in top  # no speeds given, none claimed


def test_heading_gives_the_machine_speed_at_the_start_and_the_end(run: ModuleType) -> None:
    when = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    top = run.heading(when, ["1.00 0.50 0.20"] * 2, False, [("0.61 s", "0.52 s"), ("0.74 s", "0.80 s")])
    assert "10 million steps 0.61 s / 0.74 s" in top
    assert "importing numpy, pydantic and sqlalchemy 0.52 s / 0.80 s" in top
    assert "Quick mode" not in top


def test_speed_check_times_the_loop_and_the_imports_in_a_fresh_interpreter(run: ModuleType) -> None:
    for probe in run.speed_check(tries=1):
        seconds, unit = probe.split()
        assert unit == "s" and float(seconds) > 0


def test_the_readme_table_is_replaced_between_the_markers_only(run: ModuleType) -> None:
    readme = f"# digest\n\n## Benchmarks\n\nintro\n\n{run.START}\nold table\n{run.END}\n\nafter\n"
    once = run.replace_between_markers(readme, "| new |\n")
    assert once == f"# digest\n\n## Benchmarks\n\nintro\n\n{run.START}\n\n| new |\n\n{run.END}\n\nafter\n"
    assert run.replace_between_markers(once, "| new |\n") == once  # idempotent
    with pytest.raises(ValueError, match="markers"):
        run.replace_between_markers("# no markers\n", "| new |\n")


def test_the_real_readme_has_the_markers(run: ModuleType) -> None:
    text = (RUN.parents[1] / "README.md").read_text()
    assert text.index(run.START) < text.index(run.END)
