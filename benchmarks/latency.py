"""Small-batch latency: one SGD step of a 784-256-256-10 MLP, fastnet against its peers.

    python benchmarks/latency.py [--batches 1,4,16] [--out DIR] [--baseline REV] [--no-peers]

Side by side in one process, medians after warm-up (``fastnet.timing``):
``fastnet`` (``train_step``, on the path ``net.plan()`` picks), its fused step
with the register tiles' products forced at every batch size (to find where
BLAS's take over; before the fused step covered every batch size, the fused
step itself forced), its layered numba
step (``keep_grads=True``),
the NumPy reference, and, when installed, PyTorch eager and JAX ``jit`` of
the whole step (each peer timed in a block of its own, as in ``fastnet
profile``).  ReLU, softmax cross-entropy, float32, plain SGD.  ``--baseline REV``
adds fastnet as of another commit to fastnet's own group (``baseline.py``) and
prints each case's ratio, baseline time / this tree's time.

The floor at B = 1 is measured the way the step moves its bytes: it reads the
weights for the forward pass, reads them again for the input gradients (all
but the first layer's), and reads and writes them once in the update (at
B = 1 the gradient is an outer product of two vectors, made as the weights
are updated).  Each kind of access is timed on arrays of the weights' own
shapes, so at the cache level the weights sit in: a read as the fastest of a
one-row product, ``w.max()`` and BLAS's dot product, a read and write as an
in-place scaling (``np.multiply(w, 1, out=w)``).  The floor is the
sum of those passes' times.  It is checked against the fused step measured
in the same run: a floor above a measured step is a wrong floor, and the
script stops with an error saying so.
"""

import argparse
import importlib
import json
import os
import time

import numpy as np

import fastnet as fn
from fastnet.info import environment
from fastnet.timing import compare

SIZES = (784, 256, 256, 10)
LR = 1e-3


def build_mlp(backend, lib=fn):
    """The 784-256-256-10 MLP of these benchmarks (ReLU, softmax cross-entropy, SGD(LR)),
    built with ``lib`` (fastnet, or a baseline commit's: see ``baseline.py``)."""
    layers = [lib.DenseLayer("relu", SIZES[0], neurons_num=SIZES[1], rng=0),
              lib.DenseLayer("relu", neurons_num=SIZES[2], rng=1),
              lib.DenseLayer("identity", neurons_num=SIZES[3], rng=2)]
    return lib.NeuralNetwork(layers, "softmax_xent", lib.SGD(LR), backend=backend)


def fastnet_cases(x, y, lib=fn, suffix="", reference=True):
    cases = {}
    if "numba" in lib.available_backends():
        planned, fused, layered = build_mlp("numba", lib), build_mlp("numba", lib), build_mlp("numba", lib)
        cases["fastnet" + suffix] = lambda: planned.train_step(x, y)  # the path net.plan() picks
        if hasattr(importlib.import_module(lib.__name__ + ".kernels.numba.tuning"), "fused_by_blas"):
            # the fused step at every batch size: force its register tiles instead
            cases["tiles (forced)" + suffix] = _tiles_forced(lib, fused, x, y)
        elif hasattr(fused, "_execution_plan"):  # the plan decides the path: say "fused" at every batch
            fused.plan = lambda batch, comm=None: "fused"
            cases["fused (forced)" + suffix] = lambda: fused.train_step(x, y)
        else:  # a baseline from before the execution plans
            t = fused.loss.prepare_targets(y, x.shape[0], SIZES[-1], np.float32)
            cases["fused (forced)" + suffix] = lambda: fused._fused_step(x, t, "")
        cases["layered numba" + suffix] = lambda: layered.train_step(x, y, keep_grads=True)
    if reference:
        ref = build_mlp("numpy", lib)
        cases["numpy reference" + suffix] = lambda: ref.train_step(x, y)
    return cases


def _tiles_forced(lib, net, x, y):
    """net's step with the fused step's products by the register tiles at every
    batch size (the plan made at the first call keeps them), to show where
    BLAS takes over."""
    kernels = importlib.import_module(lib.__name__ + ".kernels.numba.fused")

    def step():
        choice = kernels.fused_by_blas
        kernels.fused_by_blas = lambda batch, w_bytes, adam=False: False
        try:
            return net.train_step(x, y)
        finally:
            kernels.fused_by_blas = choice

    return step


def torch_case(x, y, threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()

    return step


def jax_case(x, y):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    params = [(jnp.asarray((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)),
               jnp.zeros((b,), jnp.float32)) for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)]

    def loss(params, x, y):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return jnp.mean(jax.nn.logsumexp(h, axis=1) - jnp.take_along_axis(h, y[:, None], axis=1)[:, 0])

    @jax.jit
    def step(params, x, y):
        grads = jax.grad(loss)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)

    state = {"p": params}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def run():
        state["p"] = step(state["p"], xj, yj)
        jax.block_until_ready(state["p"])

    return run


def weight_passes():
    """Seconds of one read pass and of one read-and-write pass over each layer's
    weights (float32, the MLP's shapes), medians after warm-up.  A read is the
    fastest of three that read every byte once: a one-row product ``x @ w``
    (the forward pass's own access), ``w.max()`` and BLAS's dot product of the
    flattened weights; a read and write is an in-place scaling."""
    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)]
    one = np.float32(1.0)
    cands = {}
    for i, w in enumerate(ws):
        f, v = w.reshape(-1), np.ones(w.size, np.float32)
        row, out = np.ones((1, w.shape[0]), np.float32), np.empty((1, w.shape[1]), np.float32)
        cands[("gemv", i)] = lambda row=row, w=w, out=out: np.matmul(row, w, out=out)
        cands[("max", i)] = lambda w=w: w.max()
        cands[("dot", i)] = lambda f=f, v=v: np.dot(f, v)
        cands[("rw", i)] = lambda f=f: np.multiply(f, one, out=f)
    med = {k: r["median"] for k, r in compare(cands, repeats=9, target_seconds=0.005).items()}
    reads = [min(med[(kind, i)] for kind in ("gemv", "max", "dot")) for i in range(len(ws))]
    return reads, [med[("rw", i)] for i in range(len(ws))]


def floor_seconds(reads, rws):
    """Forward read of every layer, input-gradient read of all but the first,
    and one read-and-write update of every layer."""
    return sum(reads) + sum(reads[1:]) + sum(rws)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4,8,16,32,64,128,256,1024,4096")
    parser.add_argument("--out", default="latency-out")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help="also time fastnet as of this commit, side by side (see baseline.py)")
    parser.add_argument("--no-peers", action="store_true", help="leave PyTorch and JAX out")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    threads = fn.get_num_threads()
    fn.warmup()
    base = None
    if args.baseline:
        from baseline import load_baseline

        base = load_baseline(args.baseline)
        base.warmup()
        print(f"baseline: {base.baseline_rev}; '@base' columns are its kernels, in the same groups")
    reads, rws = weight_passes()
    floor = floor_seconds(reads, rws)
    weight_bytes = sum(a * b * 4 for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
    rows = []
    print(f"weights {weight_bytes / 2**20:.2f} MiB: read pass {sum(reads) * 1e6:.1f} us "
          f"({weight_bytes / sum(reads) / 1e9:.0f} GB/s), read-write pass {sum(rws) * 1e6:.1f} us; "
          f"floor at B=1 {floor * 1e6:.1f} us")
    names = None
    for batch in batches:
        rng = np.random.default_rng(batch)
        x = rng.normal(size=(batch, SIZES[0])).astype(np.float32)
        y = rng.integers(0, SIZES[-1], size=batch)
        groups = [fastnet_cases(x, y)]
        if base is not None:  # in the same group: the two alternate within each round
            groups[0].update(fastnet_cases(x, y, base, "@base", reference=False))
        peers = () if args.no_peers else (("torch eager", torch_case(x, y, threads)),
                                          ("jax jit", jax_case(x, y)))
        for name, case in peers:
            if case is not None:
                groups.append({name: case})
        med = {}
        for group in groups:
            time.sleep(0.3)  # let the previous library's thread pool go idle
            med.update({k: v["median"] for k, v in compare(group, repeats=args.repeats,
                                                              target_seconds=0.01).items()})
        if names is None:
            names = list(med)
            print(f"{'B':>5} " + " ".join(f"{n:>16}" for n in names) + "   (us per step)")
        print(f"{batch:5d} " + " ".join(f"{med[n] * 1e6:16.1f}" for n in names))
        if base is not None:
            print("      base/new: " + ", ".join(f"{n} {med[n + '@base'] / med[n]:.3f}"
                                              for n in names if n + "@base" in med))
        rows.append({"batch": batch, **{n: med[n] for n in names}})
        if batch == 1:
            fastest = min(v for k, v in med.items() if not k.endswith("@base"))
            if floor > fastest:
                raise SystemExit(f"the floor at B=1 ({floor * 1e6:.1f} us) is above a measured step "
                                 f"({fastest * 1e6:.1f} us): the floor is wrong, not the step")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latency.json"), "w") as f:
        json.dump({"env": environment(), "weight_read_s": reads, "weight_read_write_s": rws,
                   "floor_b1_s": floor,
                   "rows": rows}, f, indent=1, default=str)
    _plot(rows, names, floor, os.path.join(args.out, "latency.png"))
    print(f"wrote {args.out}/latency.json and latency.png")


def _plot(rows, names, floor, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    b = [r["batch"] for r in rows]
    for name in names:
        if name in ("fused (forced)", "tiles (forced)"):
            style = {"ls": "--", "lw": 1, "alpha": 0.7}
        else:
            style = {"lw": 2 if name == "fastnet" else 1.2}
        ax.plot(b, [r[name] * 1e6 for r in rows], marker="o", ms=3, label=name, **style)
    ax.axhline(floor * 1e6, color="gray", ls=":", lw=1,
               label="floor at B=1 (the weights' reads and writes, timed)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("us per SGD step")
    ax.set_title("SGD step of a 784-256-256-10 MLP, float32", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
