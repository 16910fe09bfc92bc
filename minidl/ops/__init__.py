"""The op library: one themed module each; every op is a Function plus a lowercase helper."""
from . import elementwise, reduce, shape, matmul, conv, norm, loss  # noqa: F401
