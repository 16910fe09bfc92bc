"""Reading and writing files: minidl's own checkpoints (and, later, PyTorch .pth files)."""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: F401
