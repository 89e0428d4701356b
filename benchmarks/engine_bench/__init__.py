"""The pieces of benchmarks/bench_engine.py: statistics, SSE timing, servers, load phases,
machine baselines and the report. Pure parts (stats, sse_timing, report) are unit-tested
in tests/test_bench_engine.py."""
