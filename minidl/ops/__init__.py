"""The op library: one themed module each; every op is a Function plus a lowercase helper.

Read them in this order (each imports only the ones before it): elementwise, shape, reduce,
matmul, conv, resize, norm, loss, rnn; then tensor_methods, which makes the ops Tensor's methods.
"""
from . import elementwise, shape, reduce, matmul, conv, resize, norm, loss, rnn  # noqa: F401
from . import tensor_methods  # noqa: F401  (x + y, x.exp(), x.sum(), ... from here on)
