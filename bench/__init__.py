"""Benchmarks: `python -m bench` (or `make bench`); `python -m bench --help` for the options.

Sections are registered in `bench/__main__.py` (SECTIONS); each is a `run(ctx) -> dict` function
that prints its own table and returns its numbers for `--json`. Shared helpers live in
`bench/common.py`.
"""
