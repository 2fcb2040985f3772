"""`python -m unlearn_cli.bench`: the loop-overhead section of BENCHMARKS.md."""

from __future__ import annotations

from unlearn_cli import bench


def test_loop_benchmark_writes_and_replaces_its_section(tmp_path):
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\nthe method table\n")
    args = ["--repeats", "1", "--epochs", "1", "--markdown", str(target), "dataset=synthetic",
            "model.width=8", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    assert bench.main(args) == 0
    assert bench.main(args) == 0  # a second run replaces the section, never appends another
    text = target.read_text()
    assert text.startswith("# Benchmarks\n\nthe method table\n")
    assert text.count(bench.START) == 1 and text.count(bench.END) == 1
    section = text.split(bench.START)[1]
    for loop in (bench.OURS, bench.HAND, bench.CHECKPOINTED, bench.STREAMED):
        assert f"| {loop} |" in section
    assert "Overhead of our loop: **" in section and "Machine: " in section
    assert "Cost of the epoch checkpoints" in section
