"""Wiring: the CLI and config, one render from plan to finished file, checkpoints, scale-out, music, review.

No maths here; that lives in `stages`, which never imports this package.
"""
