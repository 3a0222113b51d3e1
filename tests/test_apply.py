"""The update from gradients given whole (``fused_sgd_apply``, ``fused_adam_apply``:
distributed training's update after the Allreduce), both twins.

Each twin calls its own optimizer kernels (``sgd_step``, ``adam_step``) on the
same arrays in the same order as the per-parameter path from Python, so each
is held to that path bit for bit; the twins to each other within the rounding
of three updates (FMA contraction, a reciprocal in place of a division), as a
relative 1e-5 in float32 and 1e-12 in float64 with the largest magnitude's
share as the absolute part: test_fused_step's one-step tolerance, which holds
a whole step's sums in other orders, so ample for three updates of a few ulp
each (about 1e-7 relative in float32); a wrong rule (another momentum, no
decay) moves the parameters by lr times a gradient of order 1, 5e-2, far past it.
"""

import numpy as np
import pytest

import fastnet as fn
from fastnet import training
from fastnet.kernels import numpy as kr

pytest.importorskip("numba")
from fastnet.kernels import numba as kj  # noqa: E402

TOL = {np.float32: 1e-5, np.float64: 1e-12}
SIZES = (7, 5, 3)
# (lr, momentum, weight_decay, nesterov) for SGD; Adam's (lr, beta1, beta2, eps, weight_decay)
CONFIGS = {"sgd": (0.05, 0.0, 0.0, False), "momentum": (0.05, 0.9, 0.0, False),
           "nesterov+decay": (0.05, 0.9, 1e-2, True), "decay": (0.05, 0.0, 1e-2, False),
           "adam": (0.01, 0.9, 0.999, 1e-8, 1e-2)}


def _arrays(config, dtype, rng):
    """Parameters, their state (velocities, or Adam's (m, v)) and a flat gradient
    buffer of two spare elements (NaN: nothing reads them)."""
    ws = [rng.normal(size=(a, b)).astype(dtype) for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)]
    bs = [rng.normal(size=(1, b)).astype(dtype) for b in SIZES[1:]]
    params = [p for pair in zip(ws, bs, strict=True) for p in pair]
    if config == "adam":
        state = ([np.abs(rng.normal(size=p.shape)).astype(dtype) * 0.1 for p in params],
                 [np.abs(rng.normal(size=p.shape)).astype(dtype) * 0.01 for p in params])
    elif CONFIGS[config][1] != 0:
        state = [rng.normal(size=p.shape).astype(dtype) for p in params]
    else:
        state = [np.zeros((0, 0), dtype) for _ in params]
    flat = np.concatenate([rng.normal(size=p.size).astype(dtype) for p in params]
                          + [np.full(2, np.nan, dtype)])
    return params, state, flat


def _plan(k, params, state, batch=4):
    dtype = params[0].dtype
    v, m = (state[1], state[0]) if isinstance(state, tuple) else (state, ())
    return k.fused_plan(params[0::2], params[1::2], v[0::2], v[1::2], [3, 0], [0.0, 0.0],
                        *[[np.empty((batch, n), dtype) for n in SIZES[1:]] for _ in range(3)], None,
                        m[0::2], m[1::2])


def _views(params, flat):
    out, at = [], 0
    for p in params:
        out.append(flat[at:at + p.size].reshape(p.shape))
        at += p.size
    return out


def _apply(k, config, plan, flat, bounds, m_bounds, step):
    if config == "adam":
        return k.fused_adam_apply(plan, flat, *CONFIGS[config], step, bounds, m_bounds)
    return k.fused_sgd_apply(plan, flat, *CONFIGS[config], bounds)


def _per_parameter(k, config, params, state, grads, bounds, m_bounds, step):
    """The per-parameter path, as ``StepState.apply`` takes it: every layer's
    bound (the gradient's largest magnitude, summed once), then the kernels."""
    big, limit = k.safe_limits(params[0].dtype)
    after = bounds.copy()
    for i in range(len(params) // 2 - 1, -1, -1):
        g = max(k.max_abs(grads[2 * i]), k.max_abs(grads[2 * i + 1]))
        if config == "adam":
            lr, b1, b2, eps, wd = CONFIGS[config]
            safe, after[i, 0], m, after[i, 1] = k.adam_update_bound(
                g, g, bounds[i, 0], m_bounds[i], bounds[i, 1], lr, b1, b2, eps, wd, step, big, limit)
            m_bounds[i] = max(m_bounds[i], m)
        else:
            safe, after[i, 0], after[i, 1] = k.sgd_update_bound(g, g, bounds[i, 0], bounds[i, 1],
                                                                *CONFIGS[config], big, limit)
        assert safe
    for j, (p, g) in enumerate(zip(params, grads, strict=True)):
        if config == "adam":
            k.adam_step(p, g, state[0][j], state[1][j], *CONFIGS[config], step)
        else:
            k.sgd_step(p, g, state[j], *CONFIGS[config])
    bounds[...] = after


def _state_arrays(state):
    return [*state[0], *state[1]] if isinstance(state, tuple) else list(state)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_each_twin_equals_its_per_parameter_update_and_the_twins_agree(config, dtype):
    got = {}
    for k in (kr, kj):
        rng = np.random.default_rng(7)
        params, state, flat = _arrays(config, dtype, rng)
        ref_params, ref_state = [p.copy() for p in params], _state_arrays(state)
        ref_state = [a.copy() for a in ref_state]
        ref_state = (ref_state[:len(params)], ref_state[len(params):]) if config == "adam" else ref_state
        plan = _plan(k, params, state)
        bounds, m_bounds = np.full((2, 2), 3.0), np.full(2, 0.5)
        ref_bounds, ref_m_bounds = bounds.copy(), m_bounds.copy()
        for step in (1, 2, 3):  # the state carried from step to step
            assert _apply(k, config, plan, flat, bounds, m_bounds, step) == 0.0
            _per_parameter(k, config, ref_params, ref_state, _views(params, flat), ref_bounds, ref_m_bounds,
                           step)
            want = ref_params + _state_arrays(ref_state)
            for a, b in zip(params + _state_arrays(state), want, strict=True):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(bounds, ref_bounds)
            np.testing.assert_array_equal(m_bounds, ref_m_bounds)
        assert np.isnan(flat[-2:]).all()
        assert not np.array_equal(params[0], _arrays(config, dtype, np.random.default_rng(7))[0][0])
        got[k] = params + _state_arrays(state)
    for a, b in zip(got[kj], got[kr], strict=True):
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * max(np.abs(b).max(initial=0), 1))


@pytest.mark.parametrize("k", [kr, kj], ids=["numpy", "numba"])
@pytest.mark.parametrize("config", ["momentum", "adam"])
def test_an_update_that_could_overflow_is_refused_and_changes_nothing(k, config):
    """A gradient near 3e37 in layer 0 of a float32 plan: every layer is checked
    before any is updated, so the refusal (-1: layer 0, checked last) leaves
    every parameter, the state and the bounds as they were; Adam's first-moment
    bounds are raised (bounds either way)."""
    params, state, flat = _arrays(config, np.float32, np.random.default_rng(1))
    flat[3] = 3e37
    plan = _plan(k, params, state)
    before = [a.copy() for a in params + _state_arrays(state)]
    bounds, m_bounds = np.full((2, 2), 3.0), np.full(2, 0.5)
    bounds_before, m_before = bounds.copy(), m_bounds.copy()
    assert _apply(k, config, plan, flat, bounds, m_bounds, 1) == -1.0
    for a, b in zip(params + _state_arrays(state), before, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(bounds, bounds_before)
    assert (m_bounds >= m_before).all() and (m_bounds[0] > m_before[0] if config == "adam" else True)


@pytest.mark.parametrize("config", ["sgd", "adam"])
def test_the_compiled_update_refuses_what_it_would_misuse(config):
    params, state, flat = _arrays(config, np.float32, np.random.default_rng(2))
    plan = _plan(kj, params, state)
    before = [a.copy() for a in params + _state_arrays(state)]
    bounds, m_bounds = np.zeros((2, 2)), np.zeros(2)
    n = sum(p.size for p in params)
    bad_grads = {"short": flat[:n - 1], "float64": flat.astype(np.float64), "2-D": flat[:n].reshape(1, -1),
                 "strided": np.repeat(flat, 2)[::2], "a list": list(flat)}
    read_only = flat.copy()
    read_only.setflags(write=False)
    bad_grads["read-only"] = read_only
    for grads in bad_grads.values():
        with pytest.raises(ValueError, match=f"grads must be a writeable C-contiguous 1-D float32 array of "
                                             f"at least {n} elements"):
            _apply(kj, config, plan, grads, bounds, m_bounds, 1)
    for bad in (np.zeros((3, 2)), np.zeros((2, 2), np.float32)):
        with pytest.raises(ValueError, match="bounds must be a writeable C-contiguous float64 array"):
            _apply(kj, config, plan, flat, bad, m_bounds, 1)
    if config == "adam":
        with pytest.raises(ValueError, match="m_bounds must be"):
            _apply(kj, config, plan, flat, bounds, np.zeros(3), 1)
        with pytest.raises(ValueError, match="step must be"):
            _apply(kj, config, plan, flat, bounds, m_bounds, 0)
        with pytest.raises(ValueError, match="Adam needs the moments"):
            _apply(kj, config, _plan(kj, params, state[1]), flat, bounds, m_bounds, 1)
    else:
        with pytest.raises(ValueError, match="momentum needs the velocities"):
            kj.fused_sgd_apply(plan, flat, 0.1, 0.9, 0.0, False, bounds)
    for a, b in zip(params + _state_arrays(state), before, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(bounds, 0)


def _net(optimizer, dtype):
    layers = [fn.DenseLayer("tanh", SIZES[0], neurons_num=SIZES[1], dtype=dtype, rng=1),
              fn.DenseLayer("identity", neurons_num=SIZES[2], dtype=dtype, rng=2)]
    return fn.NeuralNetwork(layers, "softmax_xent", optimizer, backend="numba")


def _flat_grads(net, rng, scale=1.0):
    params = net.parameters()
    flat = np.concatenate([scale * rng.normal(size=p.size).astype(net.dtype) for p in params])
    return flat, _views(params, flat)


OPTIMIZERS = {"momentum": lambda: fn.SGD(0.05, momentum=0.9), "sgd": lambda: fn.SGD(10.0),
              "adam": lambda: fn.Adam(0.01, weight_decay=1e-3)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_apply_gradients_takes_one_compiled_call_where_the_step_is_fused(optimizer, dtype, monkeypatch):
    """``training.apply_gradients`` with the flat buffer (distributed training's
    call) against the same call without it (the per-parameter path), on twin
    networks: the same parameters, state, bounds and step count, bit for bit;
    the compiled call taken once per update."""
    nets = [_net(OPTIMIZERS[optimizer](), dtype) for _ in range(2)]
    x = np.random.default_rng(0).normal(size=(4, SIZES[0])).astype(dtype)
    for net in nets:
        net.train_step(x, np.arange(4) % 3)  # the optimizer's state, and the fused plan for 4 rows
    name = "fused_adam_apply" if optimizer == "adam" else "fused_sgd_apply"
    calls, real = [], getattr(nets[0].kernels, name)
    monkeypatch.setattr(nets[0].kernels, name, lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(3)
    for step in range(3):
        flat, grads = _flat_grads(nets[0], rng)
        training.apply_gradients(nets[0], grads, "here", flat, 4)
        training.apply_gradients(nets[1], [g.copy() for g in grads], "here")
        assert len(calls) == step + 1
        for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
            np.testing.assert_array_equal(a, b)
        st = [nets[i].optimizer.state for i in (0, 1)]
        if optimizer == "adam":
            assert st[0]["t"] == st[1]["t"] == step + 2
            st = [s["m"] + s["v"] for s in st]
        for a, b in zip(*st, strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(nets[0].step_state.bounds, nets[1].step_state.bounds)
        np.testing.assert_array_equal(nets[0].step_state.m_bounds, nets[1].step_state.m_bounds)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_apply_gradients_refuses_as_the_per_parameter_path_does(optimizer):
    """A gradient that lr = 10 (SGD) would overflow float32 with: the same
    FloatingPointError, naming the layer and the gradient, from both calls;
    nothing changed, Adam's step count included."""
    nets = [_net(OPTIMIZERS[optimizer](), np.float32) for _ in range(2)]
    x = np.random.default_rng(0).normal(size=(4, SIZES[0])).astype(np.float32)
    for net in nets:
        net.train_step(x, np.arange(4) % 3)
    flat, grads = _flat_grads(nets[0], np.random.default_rng(4))
    flat[2] = 3e37 if optimizer == "sgd" else 3e38  # Adam: its second moment g^2 overflows
    errors = []
    for net, args in ((nets[0], (flat, 4)), (nets[1], ())):
        state = net.optimizer.state
        t, moments = (state["t"], state["m"] + state["v"]) if optimizer == "adam" else (None, [])
        before = [p.copy() for p in net.parameters() + moments]
        with pytest.raises(FloatingPointError) as info:
            training.apply_gradients(net, grads if args else [g.copy() for g in grads], "at step 9", *args)
        errors.append(str(info.value))
        for a, b in zip(net.parameters() + moments, before, strict=True):
            np.testing.assert_array_equal(a, b)
        if optimizer == "adam":
            assert state["t"] == t
    assert errors[0] == errors[1] and "at step 9" in errors[0] and "layers[0]" in errors[0], errors
    for key in ("bounds", "m_bounds"):  # both looked again on the exact bounds, the same
        np.testing.assert_array_equal(getattr(nets[0].step_state, key), getattr(nets[1].step_state, key))
