"""State tampered after construction, on every training path: the cases that
tests/test_tampering.py runs in a subprocess (a case that corrupted memory
would kill the process: the test then fails instead of the test run).

Usage: python tests/tamper_cases.py BACKEND

Prints one JSON line per (case, path) as it finishes: what the call raised
(its type and message) and whether every parameter and every array of the
optimizer's state kept its bits.  A line ``{"start": ...}`` comes before each
call, so a crash names the call that made it.
"""

import json
import sys

import numpy as np

import fastnet as fn

SIZES = (4, 4, 4, 3)  # two layers of one shape: one of them can be put in twice

# path -> (optimizer factory, batch, keep_grads, or "fit": four batches through fit); the paths
# the numba backend takes at these settings (on NumPy every one is "layered")
PATHS = {
    "fused": (lambda: fn.SGD(0.05, momentum=0.9), 3, False),  # products by the register tiles
    "fused-blas": (lambda: fn.SGD(0.05), 32, False),  # by BLAS, from the compiled step
    "fused-blas-nesterov": (lambda: fn.SGD(0.05, momentum=0.9, nesterov=True), 32, False),
    "fused-adam": (lambda: fn.Adam(1e-3), 3, False),
    "fused-blas-adam": (lambda: fn.Adam(1e-3), 32, False),
    "keep-grads": (lambda: fn.SGD(0.05, momentum=0.9), 3, True),
    "keep-grads-adam": (lambda: fn.Adam(1e-3), 3, True),
    # fit, whose epochs run the fused step in compiled calls of many steps
    "fit-momentum": (lambda: fn.SGD(0.05, momentum=0.9), 32, "fit"),
    "fit-adam": (lambda: fn.Adam(1e-3), 32, "fit"),
}


def make_net(backend, optimizer):
    layers = [fn.DenseLayer("tanh", SIZES[0], neurons_num=SIZES[1], rng=0),
              fn.DenseLayer("relu", neurons_num=SIZES[2], rng=1),
              fn.DenseLayer("identity", neurons_num=SIZES[3], rng=2)]
    return fn.NeuralNetwork(layers, "softmax_xent", optimizer, backend=backend)


def _state_arrays(opt):
    st = opt.state
    if isinstance(st, dict):
        return [*st["m"], *st["v"]]
    return list(st)


def _replace_state(net, index, make):
    """Put make(old) in place of the index-th state array (velocity or first moment)."""
    st = net.optimizer.state
    arrays = st["m"] if isinstance(st, dict) else st
    arrays[index] = make(arrays[index])


def _strided(a):
    """An array of a's shape and dtype whose rows are not contiguous."""
    return np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)[..., ::2]


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _resize_first_layer(net):
    """A consistent layer 0 of 6 neurons: its own w and b fit it, layer 1 does not."""
    la = net.layers[0]
    la.neurons_num = 6
    la.w = np.ones((la.n_inputs, 6), np.float32)
    la.b = np.ones((1, 6), np.float32)


def _float64_layer(net):
    net.layers[1] = fn.DenseLayer("relu", SIZES[1], neurons_num=SIZES[2], rng=1, dtype=np.float64)


def _set_moments(net):
    net.optimizer.state["m"] = [np.zeros((1, 1), np.float32)] * 6


_SPARE = fn.DenseLayer("identity", SIZES[-1], neurons_num=SIZES[-1], rng=2)


def _set(obj, name, value):
    def tamper(net):
        setattr(obj(net), name, value)
    return tamper


# case -> (tamper(net), expected exception type, a fragment of its message);
# "where" None: every path, else the paths it applies to
CASES = {
    "velocity-wrong-shape": (lambda n: _replace_state(n, 0, lambda a: np.zeros((1, 1), a.dtype)),
                             ValueError, r"optimizer.state(\['m'\])?\[0\] must be"),
    "bias-velocity-wrong-shape": (lambda n: _replace_state(n, 1, lambda a: np.zeros((2, 9), a.dtype)),
                                  ValueError, r"optimizer.state(\['m'\])?\[1\] must be"),
    "velocity-wrong-dtype": (lambda n: _replace_state(n, 2, lambda a: np.zeros(a.shape, np.float64)),
                             ValueError, r"optimizer.state(\['m'\])?\[2\] must be"),
    "velocity-not-contiguous": (lambda n: _replace_state(n, 0, lambda a: _strided(n.parameters()[0])),
                                ValueError, r"optimizer.state(\['m'\])?\[0\] must be"),
    "velocity-read-only": (lambda n: _replace_state(n, 0, _read_only),
                           ValueError, r"optimizer.state(\['m'\])?\[0\] must be"),
    "velocity-not-an-array": (lambda n: _replace_state(n, 3, lambda a: a.tolist()),
                              ValueError, r"optimizer.state(\['m'\])?\[3\] must be"),
    "state-list-short": (lambda n: (n.optimizer.state["v"] if isinstance(n.optimizer.state, dict)
                                    else n.optimizer.state).pop(),
                         ValueError, r"must be a list of 6 arrays"),
    "state-not-a-list": (_set(lambda n: n.optimizer, "state", "junk"), ValueError,
                         r"optimizer.state must be"),
    "layer-width-changed": (_resize_first_layer, ValueError,
                            r"layers\[1\] takes 4 inputs but layers\[0\] has 6"),
    "n-inputs-changed": (_set(lambda n: n.layers[1], "n_inputs", 7), ValueError,
                         r"layers\[1\]\.w must be a float32 array of shape \(7, 4\)"),
    "relu-under-softmax": (_set(lambda n: n.layers[2], "activation", "relu"), ValueError,
                           r"takes logits: the last layer's activation must be 'identity'"),
    "layer-twice": (lambda n: n.layers.__setitem__(1, n.layers[0]), ValueError,
                    r"layers\[0\] and layers\[1\] are the same DenseLayer object"),
    "float64-layer": (_float64_layer, ValueError, r"all layers must share one dtype"),
    "layers-not-a-list": (_set(lambda n: n, "layers", "junk"), TypeError, r"network.layers must be"),
    "lr-beyond-float32": (_set(lambda n: n.optimizer, "lr", 1e39), ValueError,
                          r"lr=1e\+39 is beyond the range of float32"),
    "adam-step-count": (lambda n: n.optimizer.state.__setitem__("t", "x"), ValueError,
                        r"optimizer.state\['t'\] must be"),
    "adam-moments-replaced": (_set_moments, ValueError, r"optimizer.state\['m'\]\[0\] must be"),
    # a layer that fits the last one (made before any network: making it is a change of its own, see
    # fastnet._changes): the optimizer's state no longer does
    "layer-appended": (lambda n: n.layers.append(_SPARE), ValueError,
                       r"this optimizer's state belongs to parameters of shapes"),
}
ONLY = {"adam-step-count": ("fused-adam", "fused-blas-adam", "keep-grads-adam", "fit-adam"),
        "adam-moments-replaced": ("fused-adam", "fused-blas-adam", "keep-grads-adam", "fit-adam")}


def run(backend):
    rng = np.random.default_rng(0)
    for case, (tamper, _, _) in CASES.items():
        for path, (make_opt, batch, keep_grads) in PATHS.items():
            if path not in ONLY.get(case, PATHS):
                continue
            net = make_net(backend, make_opt())
            rows = 4 * batch if keep_grads == "fit" else batch
            x = rng.normal(size=(rows, SIZES[0])).astype(np.float32)
            y = rng.integers(0, SIZES[-1], rows)

            def train(net=net, x=x, y=y, batch=batch, keep_grads=keep_grads):
                if keep_grads == "fit":
                    net.fit(x, y, epochs=1, batch_size=batch, progress=False, rng=0)
                else:
                    net.train_step(x, y, keep_grads=keep_grads)

            train()  # the state exists, the plan is built
            taken = net.plan(batch) if keep_grads is not True else "layered"
            tamper(net)
            params = [p.copy() for p in _params(net)]
            state = [a.copy() for a in _state_arrays_safe(net.optimizer)]
            print(json.dumps({"start": [case, path]}), flush=True)
            outcome = {"case": case, "path": path, "taken": taken, "raised": None, "message": ""}
            try:
                train()
            except Exception as exc:  # noqa: BLE001 (the test looks at what it was)
                outcome["raised"], outcome["message"] = type(exc).__name__, str(exc)
            outcome["unchanged"] = (
                all(_same(p, q) for p, q in zip(_params(net), params, strict=True))
                and all(_same(a, b) for a, b in zip(_state_arrays_safe(net.optimizer), state, strict=True)))
            print(json.dumps(outcome), flush=True)


def _params(net):
    """The parameters, also where net.layers itself was tampered with."""
    layers = net.layers if isinstance(net.layers, list) else net.__dict__["_tamper_layers"]
    return [p for la in dict.fromkeys(layers) for p in la.parameters()]


def _state_arrays_safe(opt):
    try:
        return [a for a in _state_arrays(opt) if isinstance(a, np.ndarray)]
    except (KeyError, TypeError):
        return []


def _same(p, q):
    return p.shape == q.shape and p.dtype == q.dtype and p.tobytes() == q.tobytes()


if __name__ == "__main__":
    # "layers-not-a-list" loses the layers: keep them where _params finds them
    _set_layers = CASES["layers-not-a-list"][0]

    def keep_then_break(net):
        net.__dict__["_tamper_layers"] = net.layers
        _set_layers(net)

    CASES["layers-not-a-list"] = (keep_then_break, *CASES["layers-not-a-list"][1:])
    run(sys.argv[1])
