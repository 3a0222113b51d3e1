"""The same dense layer in PyTorch and JAX, for ``fastnet profile --peers``.

Each builder returns ``None`` with a reason when its library is not
installed, or a dict of callables ``forward``, ``backward``, ``train_step``
that do what the fastnet cases do:

* forward: ``f(x @ w + b)`` recorded for training (autograd on, in torch);
* backward: the gradients of w, b and x from a given ``dy`` (JAX recomputes
  the forward inside its vjp, as JAX programs do);
* train_step: forward, mean squared error, backward and an SGD update
  (``jax.jit`` of the whole step).
"""

import numpy as np

_TORCH_ACT = {
    "identity": lambda F, a: a,
    "relu": lambda F, a: F.relu(a),
    "sigmoid": lambda F, a: F.sigmoid(a),
    "tanh": lambda F, a: F.tanh(a),
    "leaky_relu": lambda F, a: F.leaky_relu(a, 0.01),
    "elu": lambda F, a: F.elu(a, 1.0),
    "softplus": lambda F, a: F.softplus(a),
    "gelu": lambda F, a: F.gelu(a, approximate="tanh"),
}


def torch_case(width, activation, dtype, batch, threads, rng, lr=1e-4):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None, "PyTorch is not installed (pip install torch)"
    torch.set_num_threads(threads)
    tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    lin = torch.nn.Linear(width, width).to(tdtype)
    act = _TORCH_ACT[activation]
    x = torch.from_numpy(rng.normal(size=(batch, width)).astype(dtype))
    xg = x.clone().requires_grad_(True)
    dy = torch.from_numpy(rng.normal(size=(batch, width)).astype(dtype))
    target = torch.from_numpy(rng.normal(size=(batch, width)).astype(dtype))
    lin_step = torch.nn.Linear(width, width).to(tdtype)  # its updates must not touch `recorded`
    opt = torch.optim.SGD(lin_step.parameters(), lr=lr)
    recorded = act(F, lin(xg))

    def forward():
        return act(F, lin(xg))

    def backward():
        lin.zero_grad(set_to_none=True)
        xg.grad = None
        recorded.backward(dy, retain_graph=True)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(act(F, lin_step(x)), target)
        loss.backward()
        opt.step()
        return loss

    return {"forward": forward, "backward": backward, "train_step": train_step}, f"torch {torch.__version__}"


def _jax_act(jax, name):
    jnn, jnp = jax.nn, jax.numpy
    return {
        "identity": lambda a: a,
        "relu": jnn.relu,
        "sigmoid": jnn.sigmoid,
        "tanh": jnp.tanh,
        "leaky_relu": lambda a: jnn.leaky_relu(a, 0.01),
        "elu": lambda a: jnn.elu(a, 1.0),
        "softplus": jnn.softplus,
        "gelu": lambda a: jnn.gelu(a, approximate=True),
    }[name]


def jax_case(width, activation, dtype, batch, threads, rng, lr=1e-4):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, "JAX is not installed (pip install jax)"
    if np.dtype(dtype) == np.float64 and not jax.config.read("jax_enable_x64"):
        return None, "JAX runs float64 only with jax_enable_x64 (skipped)"
    act = _jax_act(jax, activation)
    params = (jnp.asarray((rng.normal(size=(width, width)) / np.sqrt(width)).astype(dtype)),
              jnp.zeros((1, width), dtype))
    x = jnp.asarray(rng.normal(size=(batch, width)).astype(dtype))
    dy = jnp.asarray(rng.normal(size=(batch, width)).astype(dtype))
    target = jnp.asarray(rng.normal(size=(batch, width)).astype(dtype))

    def layer(p, x):
        return act(x @ p[0] + p[1])

    fwd = jax.jit(layer)
    bwd = jax.jit(lambda p, x, dy: jax.vjp(layer, p, x)[1](dy))

    def loss(p, x, t):
        return jnp.mean((layer(p, x) - t) ** 2)

    @jax.jit
    def step(p, x, t):
        value, grads = jax.value_and_grad(loss)(p, x, t)
        return jax.tree_util.tree_map(lambda a, g: a - lr * g, p, grads), value

    state = {"p": params}

    def train_step():
        state["p"], value = step(state["p"], x, target)
        return value.block_until_ready()

    return {
        "forward": lambda: fwd(params, x).block_until_ready(),
        "backward": lambda: jax.block_until_ready(bwd(params, x, dy)),
        "train_step": train_step,
    }, f"jax {jax.__version__} (threads as XLA chooses)"


PEERS = {"torch": torch_case, "jax": jax_case}
