"""Cold start: seconds from a new interpreter to the first result, per training path.

    python benchmarks/cold_start.py [--cases fused-1,adam,...] [--runs 2] [--no-peers] [--out FILE]

Each case (``fastnet.info.FIRST_RESULT_CASES``) runs in new Python processes,
one after another: first with an empty JIT cache (a new ``NUMBA_CACHE_DIR``:
"cold"), then with the cache that run filled ("warm").  ``process`` is the whole
process's wall time, interpreter start to exit, timed from outside; ``call`` is
the first call alone, timed inside (for the ``after-warmup`` cases: the first
step after ``fastnet.warmup()``, which is what those cases are about).
float32, the 784-256-256-10 ReLU MLP of ``latency.py``, softmax cross-entropy.
PyTorch eager and JAX ``jit`` of the same first step run beside it when they
are installed (``--no-peers`` leaves them out).  The cases run one at a time:
never two timing jobs at once.
"""

import argparse
import json
import subprocess
import sys
import tempfile

from fastnet.info import FIRST_RESULT_CASES, environment, first_result

PEERS = {
    "torch-eager-1": """
import torch
torch.set_num_threads(2)
(x, y) = data(1)
start = time.perf_counter()
model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                            torch.nn.ReLU(), torch.nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
loss.backward()
opt.step()
report(start)
""",
    "jax-jit-1": """
import jax, jax.numpy as jnp
(x, y) = data(1)
start = time.perf_counter()
keys = jax.random.split(jax.random.PRNGKey(0), 3)
params = [(jax.random.normal(k, (m, n), jnp.float32) * 0.05, jnp.zeros(n, jnp.float32))
          for k, m, n in zip(keys, SIZES[:-1], SIZES[1:])]

def loss_fn(params, x, y):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return jnp.mean(jax.nn.logsumexp(h, axis=1) - h[jnp.arange(h.shape[0]), y])

@jax.jit
def step(params, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    return loss, jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, params, grads)

loss, params = step(params, jnp.asarray(x), jnp.asarray(y))
loss.block_until_ready()
report(start)
""",
}


def _installed(module):
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(FIRST_RESULT_CASES),
                        help=f"comma-separated, of: {', '.join(FIRST_RESULT_CASES)} ('': the peers alone)")
    parser.add_argument("--runs", type=int, default=1, help="cold+warm pairs per case")
    parser.add_argument("--no-peers", action="store_true", help="leave PyTorch and JAX out")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    names = [n for n in args.cases.split(",") if n]  # --cases "": the peers alone
    unknown = [n for n in names if n not in FIRST_RESULT_CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(FIRST_RESULT_CASES)}")
    cases = {n: FIRST_RESULT_CASES[n] for n in names}
    if not args.no_peers:
        cases.update({n: c for n, c in PEERS.items() if _installed(n.split("-")[0])})
    env = environment()
    print(f"# {env['cpu']}, {env['cores']} cores; numpy {env['numpy']}, numba {env['numba']}")
    print(f"{'case':28s} {'run':>3s} {'cold process':>13s} {'cold call':>10s} "
          f"{'warm process':>13s} {'warm call':>10s}")
    results = []
    for name, code in cases.items():
        for run in range(1, args.runs + 1):
            with tempfile.TemporaryDirectory(prefix="fastnet-cold-") as cache:
                cold = first_result(code, cache)
                warm = first_result(code, cache)
            row = {"case": name, "run": run, "cold_process": cold["process"], "cold_call": cold["call"],
                   "warm_process": warm["process"], "warm_call": warm["call"], "plan": cold.get("plan")}
            results.append(row)
            print(f"{name:28s} {run:3d} {row['cold_process']:12.2f}s {row['cold_call']:9.2f}s "
                  f"{row['warm_process']:12.2f}s {row['warm_call']:9.3f}s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
