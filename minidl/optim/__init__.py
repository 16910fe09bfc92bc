"""Optimizers (SGD, Adam, AdamW) and the schedules that drive their hyper-parameters.

Read optimizer.py first (parameter groups, the uniform hyper-parameter names, state
dicts), then schedule.py (one-cycle, cosine). The updates themselves are backend
kernels: ``sgd_step`` and ``adam_step`` in backend/numpy_ref.py.
"""
from .optimizer import SGD, Adam, AdamW, Optimizer, fastai_adam, lr_for_groups  # noqa: F401
from .schedule import (combine_scheds, combined_cos, constant, cosine, one_cycle, sched_const,  # noqa: F401
                       sched_cos, sched_exp, sched_lin)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "fastai_adam", "lr_for_groups",
           "sched_const", "sched_lin", "sched_cos", "sched_exp", "combine_scheds", "combined_cos",
           "one_cycle", "cosine", "constant"]
