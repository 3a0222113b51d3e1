"""``fastnet profile``: how a dense layer's speed scales with the batch size.

For each configuration (width, activation, dtype) and batch size, one process
times side by side, alternating, medians after warm-up (``fastnet.timing``):

* per backend (and per peer with ``--peers``, each peer library in a block
  of its own right after ours, see ``_QUIESCE_SECONDS``): ``forward``, ``backward``
  (dw, db and dx from a given dy) and ``train_step`` (a one-layer network:
  forward, mean squared error, backward without dx, SGD update);
* the roofline: the same-shaped bare BLAS products (NumPy's ``matmul`` into
  preallocated arrays), forward ``x @ w``, backward ``x.T @ dz`` and
  ``dz @ w.T``, train step ``x @ w`` and ``x.T @ dz``; ``roofline = bare /
  measured`` (1.0 is the GEMM limit at large batch; above 1 where BLAS itself
  is slow);
* per fastnet backend, the train step's phases: GEMM, bias + activation,
  activation gradient, bias gradient (with the batch averaging), loss, update,
  and everything else (Python, validation, dispatch) as the remainder; where
  the step is one fused compiled call, that call is its one phase
  (``fused_step``).

It also measures the machine's GEMM peak once per run and finds the knee: the
smallest batch size reaching 90% of a backend's best train-step throughput.
"""

import argparse
import csv
import json
import os
import sys
import time

import numpy as np

import fastnet as fn
from fastnet import training
from fastnet._validation import kernel_ready
from fastnet.info import environment
from fastnet.kernels import ACTIVATION_CODES, ACTIVATIONS, LOSS_CODES
from fastnet.timing import compare

OPS = ("forward", "backward", "train_step")
PHASES = ("gemm", "bias_activation", "activation_grad", "bias_grad", "loss", "update", "fused_step",
          "other")
DEFAULT_BATCHES = tuple(2**k for k in range(13))  # 1 ... 4096
QUICK_BATCHES = (1, 16, 256, 2048)
_MSE = LOSS_CODES["mse"]
# Thread pools of different libraries spin for a while after each call (OpenBLAS
# ~0.1 s, OpenMP runtimes up to 0.2 s): interleaving numpy, torch and JAX calls
# measured their interference (2x slower on 2 cores), not the libraries.  So each
# library is timed in a group of its own, after this pause for the others to idle.
_QUIESCE_SECONDS = 0.3


def flops(op, batch, n):
    """Floating-point operations of ``op`` on an n x n layer (multiply-adds count 2)."""
    products = {"forward": 1, "backward": 2, "train_step": 2}[op]
    return 2.0 * products * batch * n * n


class LayerCase:
    """A one-layer network on one backend, its data, and callables to time."""

    def __init__(self, backend, width, activation, dtype, batch, rng):
        self.layer = fn.DenseLayer(activation, width, neurons_num=width, dtype=dtype, rng=0,
                                   backend=backend)
        self.net = fn.NeuralNetwork([self.layer], fn.MeanSquaredError(), fn.SGD(1e-4),
                                    backend=backend)
        self.x = rng.normal(size=(batch, width)).astype(dtype)
        self.dy = rng.normal(size=(batch, width)).astype(dtype)
        self.target = rng.normal(size=(batch, width)).astype(dtype)
        self.net.train_step(self.x, self.target)  # allocates workspaces, compiles
        self.layer.backward_pass(self.dy)
        self.k = self.net.kernels

    def ops(self):
        layer, x, dy, net, t = self.layer, self.x, self.dy, self.net, self.target
        return {
            "forward": lambda: layer.forward_pass(x),
            "backward": lambda: layer.backward_pass(dy),
            "train_step": lambda: net.train_step(x, t),
        }

    def phases(self):
        """Callables for the phases of ``train_step`` on this backend's kernels.

        Where the step is fused (``plan`` says "fused"), its phases happen
        inside one compiled call: the step on validated data
        (``fastnet.training.train_batch``: that call and the Python that makes
        it) is the one phase, ``fused_step``, and "other" is what
        ``train_step`` adds around it (its checks of the arguments and state)."""
        la, k, x, t = self.layer, self.k, self.x, self.target
        net = self.net
        if net.plan(x.shape[0]) == "fused":
            xk = kernel_ready(x)
            tk = net.loss.prepare_targets(t, x.shape[0], net.n_outputs, net.dtype)
            return {"fused_step": lambda: training.train_batch(net, xk, tk, "in the profiler")}
        w, b, a, y, dz, dw, db = la.w, la.b, la.a, la.y, la.dz, la.dw, la.db
        kind, alpha = ACTIVATION_CODES[la.activation.name], la.activation.alpha
        n = x.shape[0]
        dout = np.empty_like(y)
        opt = self.net.optimizer
        vel = [np.zeros((0, 0), w.dtype)] * 2
        phases = {
            "loss": lambda: k.loss_and_grad(_MSE, y, t, dout),
            "update": lambda: (k.sgd_step(w, dw, vel[0], opt.lr, 0.0, 0.0, False),
                               k.sgd_step(b, db, vel[1], opt.lr, 0.0, 0.0, False)),
        }
        if self.net.backend == "numba":
            # bias gradient is fused into the activation-gradient pass
            phases.setdefault("gemm", lambda: (np.matmul(x, w, out=a), k.dense.weight_grad(x, dz, dw)))
            phases["bias_activation"] = lambda: k.activations.forward_epilogue(b, kind, alpha, a, y)
            phases["activation_grad"] = lambda: k.activations.backward_prologue(kind, alpha, a, y, dout,
                                                                                dz, db)
        else:
            def bias_activation():
                np.add(a, b, out=a)
                k.activation_forward(kind, alpha, a, y)

            def bias_grad():
                np.sum(dz, axis=0, keepdims=True, out=db)
                np.divide(db, n, out=db)
                np.divide(dw, n, out=dw)

            phases["gemm"] = lambda: (np.matmul(x, w, out=a), np.matmul(x.T, dz, out=dw))
            phases["bias_activation"] = bias_activation
            phases["activation_grad"] = lambda: k.activation_grad(kind, alpha, a, y, dout, dz)
            phases["bias_grad"] = bias_grad
        return phases


def bare_blas(width, dtype, batch, rng):
    """The bare matrix products of each op, into preallocated arrays."""
    x = rng.normal(size=(batch, width)).astype(dtype)
    w = rng.normal(size=(width, width)).astype(dtype)
    dz = rng.normal(size=(batch, width)).astype(dtype)
    a, dw, dx = np.empty_like(dz), np.empty_like(w), np.empty_like(x)
    return {
        "forward": lambda: np.matmul(x, w, out=a),
        "backward": lambda: (np.matmul(x.T, dz, out=dw), np.matmul(dz, w.T, out=dx)),
        "train_step": lambda: (np.matmul(x, w, out=a), np.matmul(x.T, dz, out=dw)),
    }


def gemm_peak(dtype, n=1024, repeats=5):
    """GFLOP/s of an n x n x n GEMM in ``dtype``: the machine's compute limit here."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, n)).astype(dtype)
    b = rng.normal(size=(n, n)).astype(dtype)
    c = np.empty_like(a)
    res = compare({"gemm": lambda: np.matmul(a, b, out=c)}, repeats=repeats, target_seconds=0.05)
    return 2.0 * n**3 / res["gemm"]["median"] / 1e9


def knee(points):
    """The smallest batch size whose throughput reaches 90% of the best; points: {batch: samples/s}."""
    if not points:
        return None
    best = max(points.values())
    return min(b for b, v in points.items() if v >= 0.9 * best)


def profile(widths=(512,), activations=("relu",), dtypes=("float32",), backends=None,
            batches=DEFAULT_BATCHES, peers=False, threads=None, repeats=5, target_seconds=0.004,
            progress=True):
    """Run the sweep and return every figure as a dict (see the module docstring)."""
    from tqdm.auto import tqdm

    backends = list(backends or fn.available_backends())
    for name in backends:
        if name not in fn.available_backends():
            raise ValueError(f"backend {name!r} is not available here; available: "
                             f"{', '.join(fn.available_backends())}")
    if threads is not None:
        fn.set_num_threads(threads)
    compiled_before = fn.backend.compile_seconds()
    results = {"env": environment(), "peak_gflops": {},
               "peers": {}, "rows": [], "knees": {}, "settings": {
                   "widths": list(widths), "activations": list(activations), "dtypes": list(dtypes),
                   "backends": backends, "batches": list(batches), "repeats": repeats,
                   "target_seconds": target_seconds, "threads": fn.get_num_threads()}}
    configs = [(w, a, d) for w in widths for a in activations for d in dtypes]
    for dtype in dtypes:
        results["peak_gflops"][dtype] = gemm_peak(np.dtype(dtype))
    bar = tqdm(total=len(configs) * len(batches), desc="profile", unit="point",
               disable=not progress, leave=False, file=sys.stderr)
    # no warmup(): each point compiles what it runs, before it is timed (LayerCase),
    # and the bar says so while it compiles
    results["interrupted"] = False
    try:
        with bar, fn.backend.bar_notice(bar, "profile"):
            for width, activation, dtype in configs:
                for batch in batches:
                    rows = _profile_point(width, activation, np.dtype(dtype), batch, backends, peers,
                                          repeats, target_seconds, results["peers"])
                    results["rows"].extend(rows)
                    bar.update()
    except KeyboardInterrupt:  # Ctrl-C: the points measured so far are the results
        results["interrupted"] = True
    results["jit_compile_seconds"] = fn.backend.compile_seconds() - compiled_before
    for width, activation, dtype in configs:
        for name in {r["backend"] for r in results["rows"]}:
            pts = {r["batch"]: r["samples_per_s"] for r in results["rows"]
                   if (r["width"], r["activation"], r["dtype"], r["backend"], r["op"])
                   == (width, activation, dtype, name, "train_step")}
            results["knees"][f"{width}/{activation}/{dtype}/{name}"] = knee(pts)
    return results


def _profile_point(width, activation, dtype, batch, backends, peers, repeats, target, peer_info):
    rng = np.random.default_rng(batch)
    threads = fn.get_num_threads()
    cands, cases = {}, {}
    for name in backends:
        cases[name] = LayerCase(name, width, activation, dtype, batch, rng)
        for op, call in cases[name].ops().items():
            cands[(name, op)] = call
        for phase, call in cases[name].phases().items():
            cands[(name, "phase", phase)] = call
    for op, call in bare_blas(width, dtype, batch, rng).items():
        cands[("blas", op)] = call
    groups = [cands]
    if peers:
        from fastnet._peers import PEERS

        for peer, build in PEERS.items():
            calls, note = build(width, activation, dtype, batch, threads, rng)
            peer_info[peer] = note
            if calls is not None:
                groups.append({(peer, op): call for op, call in calls.items()})
    timed = {}
    for group in groups:
        if peers:
            time.sleep(_QUIESCE_SECONDS)
        timed.update(compare(group, repeats=repeats, target_seconds=target))
    rows = []
    for key, res in timed.items():
        if key[0] == "blas" or key[1] == "phase":
            continue
        name, op = key
        bare = timed[("blas", op)]["median"]
        med = res["median"]
        row = {"width": width, "activation": activation, "dtype": dtype.name, "batch": batch,
               "backend": name, "op": op, "us_median": med * 1e6, "us_min": res["min"] * 1e6,
               "us_max": res["max"] * 1e6, "samples_per_s": batch / med,
               "gflops": flops(op, batch, width) / med / 1e9, "bare_blas_us": bare * 1e6,
               "roofline": bare / med}
        if op == "train_step" and name in backends:
            # each phase timed alone; "other" (Python, checks, dispatch) is the remainder,
            # never below 0, so the phases' sum may exceed the step by the timing noise
            parts = {p: timed[(name, "phase", p)]["median"] * 1e6 if (name, "phase", p) in timed else 0.0
                     for p in PHASES if p != "other"}
            parts["other"] = max(med * 1e6 - sum(parts.values()), 0.0)
            row.update({f"phase_{p}_us": parts[p] for p in PHASES})
            row["phases_over_step"] = sum(parts.values()) / (med * 1e6)
            row["plan"] = cases[name].net.plan(batch)
        rows.append(row)
    return rows


# -- output ------------------------------------------------------------------------------
def format_table(results):
    """The terminal table: a block per configuration, a line per batch size and backend."""
    lines = ["GEMM peak (n=1024): " + ", ".join(f"{d} {g:.0f} GFLOP/s"
                                                 for d, g in results["peak_gflops"].items())]
    rows = results["rows"]
    names = sorted({r["backend"] for r in rows}, key=lambda s: (s not in ("numpy", "numba"), s))
    configs = sorted({(r["width"], r["activation"], r["dtype"]) for r in rows})
    head = (f"{'B':>5} {'backend':<7} {'fwd us':>9} {'bwd us':>9} {'f+b roof':>8} {'step us':>9} "
            f"{'step roof':>9} {'samples/s':>10} {'GFLOP/s':>8}")
    for width, activation, dtype in configs:
        lines += ["", f"{width}x{width} {activation} {dtype} (roof = bare BLAS time / measured time; "
                      "step = one-layer network, MSE, SGD)", head]
        by = {(r["backend"], r["batch"], r["op"]): r for r in rows
              if (r["width"], r["activation"], r["dtype"]) == (width, activation, dtype)}
        for batch in sorted({r["batch"] for r in rows}):
            for n in names:
                f_, b_, s = (by.get((n, batch, op)) for op in OPS)
                if s is None:
                    continue
                fb_roof = (f_["bare_blas_us"] + b_["bare_blas_us"]) / (f_["us_median"] + b_["us_median"])
                lines.append(f"{batch:5d} {n:<7} {f_['us_median']:9.1f} {b_['us_median']:9.1f} "
                             f"{fb_roof:8.2f} {s['us_median']:9.1f} {s['roofline']:9.2f} "
                             f"{s['samples_per_s']:10.4g} {s['gflops']:8.1f}")
        knees = {n: results["knees"].get(f"{width}/{activation}/{dtype}/{n}") for n in names}
        lines.append("knee (smallest B with 90% of the best step throughput): "
                     + ", ".join(f"{n} B={k}" for n, k in knees.items()))
    for peer, note in results["peers"].items():
        lines.append(f"peer {peer}: {note}")
    return "\n".join(lines)


def write_outputs(results, out_dir, plot=True):
    """profile.json, profile.csv and (with matplotlib) profile.png in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "profile.json"), "csv": os.path.join(out_dir, "profile.csv")}
    with open(paths["json"], "w") as f:
        json.dump(results, f, indent=1, default=str)
    fields = sorted({k for r in results["rows"] for k in r}, key=_field_order)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(results["rows"])
    if plot:
        from fastnet._plot import plot_profile

        paths["png"] = plot_profile(results, os.path.join(out_dir, "profile.png"))
    return paths


def _field_order(key):
    first = ["width", "activation", "dtype", "backend", "op", "batch", "us_median", "us_min",
             "us_max", "samples_per_s", "gflops", "bare_blas_us", "roofline"]
    return (first.index(key), key) if key in first else (len(first), key)


# -- command line -----------------------------------------------------------------------------
def point_bytes(width, batch, dtype, n_backends):
    """About the memory one point of the sweep holds: per backend a one-layer
    network (w, dw) and nine batch-sized arrays (x, dy, target, a, y, dz, dx,
    the loss gradient, the phases' output), the bare products' w, dw and four
    batch-sized arrays, and the largest float64 array drawn before a cast."""
    item = np.dtype(dtype).itemsize
    return (item * ((2 * n_backends + 2) * width * width + (9 * n_backends + 4) * batch * width)
            + 8 * max(width * width, batch * width))


def available_bytes():
    """The memory the system can give (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _writable_folder(path):
    """Create ``path`` (and its parents) and write a file in it: an OSError now,
    not after the sweep."""
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".fastnet-profile-{os.getpid()}.tmp")
    with open(probe, "w") as f:
        f.write("probe")
    os.remove(probe)


def _positive_ints(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _positive_int(text):
    values = _positive_ints(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive integer, got {text!r}")
    return values[0]


def _names(choices):
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(choices)}, got {text!r}")
        return values
    return parse


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="fastnet profile", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="How a dense layer's speed scales with the batch size, against the machine's own "
                    "GEMM limit: a table, and profile.json, profile.csv and profile.png in --out.")
    parser.add_argument("--widths", type=_positive_ints, default="512",
                        help="layer widths n (an n x n layer), comma-separated")
    parser.add_argument("--activations", type=_names(ACTIVATIONS), default="relu",
                        help=f"comma-separated, from {', '.join(ACTIVATIONS)}")
    parser.add_argument("--dtypes", type=_names(("float32", "float64")), default="float32",
                        help="float32 and/or float64, comma-separated")
    parser.add_argument("--backends", type=_names(("numpy", "numba")), default=None,
                        help="numpy and/or numba, comma-separated; None: every available backend")
    parser.add_argument("--batches", type=_positive_ints, default=None,
                        help="batch sizes, comma-separated; None: the powers of two 1 ... 4096 "
                             f"(with --quick: {','.join(map(str, QUICK_BATCHES))})")
    parser.add_argument("--peers", action="store_true", help="also time PyTorch and JAX when installed")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="compute threads (fastnet.set_num_threads); None: as configured")
    parser.add_argument("--quick", action="store_true", help="4 batch sizes, fewer repeats (< 15 s)")
    parser.add_argument("--out", default="profile-out",
                        help="folder for profile.json, .csv and .png (created if missing)")
    parser.add_argument("--no-plot", action="store_true", help="write no profile.png")
    parser.add_argument("--no-progress", action="store_true", help="show no progress bar")
    args = parser.parse_args(argv)
    batches = args.batches or (QUICK_BATCHES if args.quick else DEFAULT_BATCHES)
    # every argument is checked before anything is measured
    try:
        _writable_folder(args.out)
    except OSError as exc:
        parser.error(f"argument --out: cannot write into {args.out!r}: {exc.strerror or exc}")
    n_backends = len(args.backends or fn.available_backends())
    need = max(point_bytes(w, b, d, n_backends) for w in args.widths for b in batches for d in args.dtypes)
    have = available_bytes()
    if have is not None and need > have:
        parser.error(f"the largest point (width {max(args.widths)}, batch {max(batches)}) needs about "
                     f"{need / 2**30:.1f} GiB; {have / 2**30:.1f} GiB is available. Give smaller "
                     "--widths or --batches")
    plot = not args.no_plot
    if plot:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            plot = False
            print("no plot: matplotlib is not installed (pip install 'fastnet-dense[plot]')", file=sys.stderr)
    start = time.perf_counter()
    try:
        results = profile(args.widths, args.activations, args.dtypes, args.backends, batches,
                          peers=args.peers, threads=args.threads,
                          repeats=3 if args.quick else 5, target_seconds=0.002 if args.quick else 0.004,
                          progress=not args.no_progress)
    except ValueError as exc:
        parser.error(str(exc))
    results["seconds"] = time.perf_counter() - start
    if results["rows"]:
        print(format_table(results))
    paths = write_outputs(results, args.out, plot=plot and bool(results["rows"]))
    compiled = results["jit_compile_seconds"]
    print(f"\n{results['seconds']:.1f} s (of which {compiled:.1f} s compiling JIT kernels, first use only); "
          "wrote " + ", ".join(paths.values()))
    if results["interrupted"]:
        print(f"fastnet profile: interrupted; wrote the {len(results['rows'])} rows measured so far",
              file=sys.stderr)
        return 130
    return 0
