"""Models: the networks, their targets and metrics, and the checkpoints that ship."""
from pathlib import Path

# The checkpoints that ship with the code (model cards in models/README.md): the pass, the CLI
# and the evaluations load from here unless told otherwise.
SHIPPED = Path(__file__).resolve().parent / "checkpoints"
