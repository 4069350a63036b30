"""Test package (so `from tests.synth import make_clip` works)."""
import os

# As the CLI does: torch shares the cores with decode/flow/encode threads; spinning OpenMP waits stall it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
