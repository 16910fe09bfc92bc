"""Schedules: a hyper-parameter as a function of how far training has gone.

A schedule is a function of ``pct``, the fraction of training done (0 at the first
batch, 1 at the end), that returns the value to use now. Start and end values may be
numbers or lists with one value per parameter group; the schedule then returns a
list, ready for ``optimizer.set_hyper(name, values)``.

The building blocks (fastai's formulas):

    sched_const(v)            v
    sched_lin(start, end)     start + pct * (end - start)
    sched_cos(start, end)     start + (1 + cos(pi * (1 - pct))) * (end - start) / 2
    sched_exp(start, end)     start * (end / start) ** pct        (lr_find's sweep)
    combine_scheds(pcts, scheds)   one schedule after another, over consecutive fractions

and the policies a Learner uses, each a dict {hyper-parameter name: schedule}:

    one_cycle(lr_max, ...)    fastai's fit_one_cycle: lr warms up then anneals, momentum does the opposite
    cosine(lr_max, ...)       flat (optionally), then cosine annealing (fastai's fit_flat_cos)
    constant(lr)              the same rate throughout (fastai's fit)

A Learner applies a policy before each batch:
``for name, sched in policy.items(): opt.set_hyper(name, sched(pct))``.
"""
import math
import numbers

# ---------------------------------------------------------------- values: a number or one per group


def _values(v, what):
    """A number -> [float], False; a list/tuple/array -> [floats], True."""
    if hasattr(v, "tolist"):   # a numpy array
        v = v.tolist()
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return [float(v)], False
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v):
        return [float(x) for x in v], True
    raise TypeError(f"schedule: {what} must be a number or a non-empty list of numbers (one per "
                    f"parameter group), got {v!r}")


def _scaled(v, factor):
    """v * factor for a number or for each value of a list."""
    values, many = _values(v, "the value")
    values = [x * factor for x in values]
    return values if many else values[0]


def _check_pct(pct):
    if isinstance(pct, bool) or not isinstance(pct, numbers.Real) or not 0 <= pct <= 1:
        raise ValueError(f"schedule: pct is the fraction of training done and must be in [0, 1], got {pct!r}")
    return float(pct)


def _schedule(formula, start, end):
    """A schedule applying ``formula(start, end, pct)`` to a pair of numbers, or to each pair of a list."""
    starts, many_starts = _values(start, "start")
    ends, many_ends = _values(end, "end")
    if many_starts and many_ends and len(starts) != len(ends):
        raise ValueError(f"schedule: start has {len(starts)} values and end has {len(ends)}; "
                         f"give one per parameter group to both")
    n = max(len(starts), len(ends))
    starts, ends = (starts * n if not many_starts else starts), (ends * n if not many_ends else ends)

    def sched(pct):
        pct = _check_pct(pct)
        values = [formula(s, e, pct) for s, e in zip(starts, ends)]
        return values if (many_starts or many_ends) else values[0]
    return sched


# ---------------------------------------------------------------- the building blocks

def sched_const(value):
    """value, whatever pct."""
    return _schedule(lambda s, e, pct: s, value, value)


def sched_lin(start, end):
    """start + pct * (end - start): a straight line."""
    return _schedule(lambda s, e, pct: s + pct * (e - s), start, end)


def sched_cos(start, end):
    """start + (1 + cos(pi * (1 - pct))) * (end - start) / 2: half a cosine, flat at both ends."""
    return _schedule(lambda s, e, pct: s + (1 + math.cos(math.pi * (1 - pct))) * (e - s) / 2, start, end)


def sched_exp(start, end):
    """start * (end / start) ** pct: evenly spaced on a log scale (start and end > 0)."""
    for v in _values(start, "start")[0] + _values(end, "end")[0]:
        if not v > 0:
            raise ValueError(f"sched_exp: start and end must be > 0 (log spacing), got {v}")
    return _schedule(lambda s, e, pct: s * (e / s) ** pct, start, end)


def combine_scheds(pcts, scheds):
    """Run ``scheds[i]`` over the fraction ``pcts[i]`` of training, one after another.

    The pieces cover [0, 1]: piece i spans [b_i, b_{i+1}) with b_i = pcts[0] + ... + pcts[i-1],
    and is called with its own progress (pct - b_i) / pcts[i]. At a boundary the later
    piece starts (fastai's rule); a piece of width 0 is never used.
    """
    pcts, scheds = [float(p) for p in pcts], list(scheds)
    if len(pcts) != len(scheds) or not pcts:
        raise ValueError(f"combine_scheds: {len(pcts)} fractions for {len(scheds)} schedules; "
                         f"give one fraction per schedule")
    if any(not p >= 0 for p in pcts) or abs(sum(pcts) - 1) > 1e-9:
        raise ValueError(f"combine_scheds: the fractions must be >= 0 and add up to 1, got {pcts}")
    bounds = [0.0]
    for p in pcts:
        bounds.append(bounds[-1] + p)
    bounds[-1] = 1.0
    pieces = [i for i, p in enumerate(pcts) if p > 0]

    def sched(pct):
        pct = _check_pct(pct)
        i = max(i for i in pieces if bounds[i] <= pct)
        return scheds[i](min((pct - bounds[i]) / (bounds[i + 1] - bounds[i]), 1.0))
    return sched


def combined_cos(pct, start, middle, end):
    """Cosine from start to middle over the first ``pct`` of training, then from middle to end."""
    return combine_scheds([pct, 1 - pct], [sched_cos(start, middle), sched_cos(middle, end)])


# ---------------------------------------------------------------- policies: {hyper-parameter: schedule}

def one_cycle(lr_max, div=25.0, div_final=1e5, pct_start=0.25, moms=(0.95, 0.85, 0.95)):
    """fastai's 1cycle policy (fit_one_cycle): {"lr": schedule, "mom": schedule}.

        lr:  cosine from lr_max / div up to lr_max over the first pct_start of training,
             then cosine down to lr_max / div_final
        mom: cosine from moms[0] down to moms[1] over pct_start, then back up to moms[2]

    ``lr_max`` is a number or one value per parameter group (the lr schedule then
    returns a list). ``moms=None`` leaves momentum alone (no "mom" entry): use it for
    an SGD without momentum, since scheduling "mom" turns SGD's momentum on.
    """
    _check_policy(div=div, div_final=div_final)
    if not 0 <= pct_start <= 1:
        raise ValueError(f"one_cycle: pct_start must be in [0, 1], got {pct_start!r}")
    _values(lr_max, "lr_max")
    policy = {"lr": combined_cos(pct_start, _scaled(lr_max, 1 / div), lr_max, _scaled(lr_max, 1 / div_final))}
    if moms is not None:
        moms = tuple(moms)
        if len(moms) != 3:
            raise ValueError(f"one_cycle: moms must be (start, middle, end), got {moms!r}")
        policy["mom"] = combined_cos(pct_start, *moms)
    return policy


def cosine(lr_max, div_final=1e5, pct_start=0.0):
    """Cosine annealing: {"lr": schedule}.

    lr_max for the first ``pct_start`` of training, then cosine from lr_max down to
    lr_max / div_final. pct_start=0 is plain cosine annealing; pct_start=0.75 is
    fastai's fit_flat_cos.
    """
    _check_policy(div_final=div_final)
    if not 0 <= pct_start <= 1:
        raise ValueError(f"cosine: pct_start must be in [0, 1], got {pct_start!r}")
    return {"lr": combine_scheds([pct_start, 1 - pct_start],
                                 [sched_const(lr_max), sched_cos(lr_max, _scaled(lr_max, 1 / div_final))])}


def constant(lr):
    """The same learning rate throughout: {"lr": schedule}."""
    return {"lr": sched_const(lr)}


def _check_policy(**divisors):
    for name, v in divisors.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0:
            raise ValueError(f"schedule: {name} must be a number > 0, got {v!r}")
