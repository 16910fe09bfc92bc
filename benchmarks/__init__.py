"""Kernel and end-to-end benchmarks: minidl vs numpy vs PyTorch, as ratios."""
