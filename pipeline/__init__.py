"""Wiring: config, CLI, the frame loop, checkpoints. No maths here; that lives in `stages`."""
