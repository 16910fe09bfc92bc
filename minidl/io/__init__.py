"""Reading and writing files: minidl's own checkpoints, and PyTorch .pth files (read only, no torch)."""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: F401
from .pth import PthError, UnsafePickleError, load_pth  # noqa: F401
