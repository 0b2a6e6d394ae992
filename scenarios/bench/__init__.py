"""Benchmarks: each module measures one thing and returns a markdown section; `python -m
scenarios.bench` (`make bench`) runs them all and writes docs/benchmarks.md."""
