"""Neural-network building blocks. ``functional`` holds the stateless ops (F.relu, F.conv2d, ...)."""
from . import functional  # noqa: F401
