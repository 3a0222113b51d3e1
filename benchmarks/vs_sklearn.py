"""fastnet's estimators beside scikit-learn's MLPs: accuracy (R^2) and fit time.

    python benchmarks/vs_sklearn.py [--quick] [--datasets digits,wine,...] [--repeats 3]
                                    [--out results.json]

The same data, split and hyperparameters for both libraries (``CASES``);
each configuration fits ``--repeats`` times with random_state 0, 1, 2, ...,
and the table gives medians.  Every fit runs its full ``max_iter`` epochs
(``n_iter_no_change = max_iter``: neither library stops on its own), so the
times are of the same work.  Each library runs in a block of its own, with a
pause between the blocks (their thread pools spin and slow each other), after
one untimed warm-up fit of each configuration (fastnet's first fit compiles
its JIT kernels).  Scores are on a held-out quarter, stratified for the
classifiers, after a StandardScaler fitted on the training part; the
diabetes target is standardised too (R^2 does not change).

``--quick`` runs one repeat with fewer epochs: a smoke test, not a figure.
"""

import argparse
import json
import statistics
import time
import warnings

import fastnet as fn
from fastnet.info import environment

# scikit-learn is imported where it is used: asv imports every module of benchmarks/
# into environments that have only fastnet's own dependencies

# name -> (loader, estimator kind, hyperparameters shared by both libraries): scikit-learn's
# defaults (Adam, batches of 200) on the small sets
CASES = {
    "digits": ("digits", "classifier", dict(hidden_layer_sizes=(100,), max_iter=200)),
    "wine": ("wine", "classifier", dict(hidden_layer_sizes=(100,), max_iter=200)),
    "breast_cancer": ("breast_cancer", "classifier", dict(hidden_layer_sizes=(100,), max_iter=200)),
    "diabetes": ("diabetes", "regressor", dict(hidden_layer_sizes=(100,), max_iter=200)),
    # the headline case: the batch sizes people train with, SGD with momentum
    "classification_20k": ("make_classification", "classifier",
                           dict(hidden_layer_sizes=(256, 128), solver="sgd", learning_rate_init=0.01,
                                momentum=0.9, batch_size=32, max_iter=5)),
}


def load(name):
    from sklearn import datasets

    if name == "make_classification":
        return datasets.make_classification(n_samples=20_000, n_features=100, n_informative=30,
                                            n_classes=5, random_state=0)
    return getattr(datasets, f"load_{name}")(return_X_y=True)


def prepared(loader, kind):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load(loader)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0,
                                              stratify=y if kind == "classifier" else None)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    if kind == "regressor":
        mean, std = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - mean) / std, (y_te - mean) / std
    return X_tr, X_te, y_tr, y_te


def fit_and_score(cls, params, seed, data):
    X_tr, X_te, y_tr, y_te = data
    est = cls(random_state=seed, n_iter_no_change=params["max_iter"], **params)
    start = time.perf_counter()
    est.fit(X_tr, y_tr)
    seconds = time.perf_counter() - start
    return seconds, est.score(X_te, y_te), est.n_iter_


def run_block(lib, names, repeats, quick, module=fn):
    """Fit and score every data set of ``names`` with ``lib`` ("sklearn", or a
    fastnet: this tree's, or ``module``, a baseline's)."""
    from sklearn import neural_network as sk

    out = {}
    for name in names:
        loader, kind, params = CASES[name]
        params = dict(params, max_iter=2 if quick else params["max_iter"])
        source = sk if lib == "sklearn" else module
        cls = source.MLPClassifier if kind == "classifier" else source.MLPRegressor
        data = prepared(loader, kind)
        fit_and_score(cls, dict(params, max_iter=1), 0, data)  # warm-up: JIT compile, caches
        runs = [fit_and_score(cls, params, seed, data) for seed in range(repeats)]
        out[name] = {"seconds": statistics.median(r[0] for r in runs),
                     "score": statistics.median(r[1] for r in runs),
                     "epochs": runs[0][2], "runs": runs}
        print(f"  {lib:8s} {name:20s} {out[name]['seconds']:8.3f} s  score {out[name]['score']:.4f}",
              flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    ap.add_argument("--repeats", type=int, default=3, help="fits per configuration (default 3)")
    ap.add_argument("--quick", action="store_true", help="one repeat of 2 epochs: a smoke test")
    ap.add_argument("--out", help="write the results and the environment as JSON")
    ap.add_argument("--baseline", metavar="REV",
                    help="also time fastnet as of this commit, in a block of its own (baseline.py)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown data sets {unknown}; choose from {list(CASES)}")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    repeats = 1 if args.quick else args.repeats
    env = environment()
    print(f"CPU: {env['cpu']}, {env['cores']} cores; fastnet {env['fastnet']} "
          f"({fn.MLPClassifier().get_params()['dtype']}, backend {env['default_backend']}); "
          f"numpy {env['numpy']}, numba {env['numba']}")
    from sklearn.exceptions import ConvergenceWarning

    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # every fit runs max_iter epochs on purpose
        libs = {"fastnet": fn, "sklearn": None}
        if args.baseline:
            from baseline import load_baseline

            libs[f"fastnet@{args.baseline}"] = load_baseline(args.baseline)
        for i, (lib, module) in enumerate(libs.items()):
            if i:
                time.sleep(2.0)  # let the other library's threads go idle
            results[lib] = run_block(lib, names, repeats, args.quick, module)
    print()
    print(f"{'data set':20s} {'epochs':>6s} {'fastnet s':>10s} {'sklearn s':>10s} {'speed-up':>9s} "
          f"{'fastnet':>8s} {'sklearn':>8s} {'diff':>7s}")
    rows = []
    for name in names:
        a, b = results["fastnet"][name], results["sklearn"][name]
        metric = "R2" if CASES[name][1] == "regressor" else "acc"
        row = {"data set": name, "epochs": a["epochs"], "fastnet_seconds": a["seconds"],
               "sklearn_seconds": b["seconds"], "speedup": b["seconds"] / a["seconds"], "metric": metric,
               "fastnet_score": a["score"], "sklearn_score": b["score"],
               "points": 100 * (a["score"] - b["score"])}
        line = (f"{name:20s} {a['epochs']:6d} {a['seconds']:10.3f} {b['seconds']:10.3f} "
                f"{row['speedup']:8.2f}x {a['score']:8.4f} {b['score']:8.4f} {row['points']:+6.2f}"
                f" ({metric}, points)")
        if args.baseline:
            base = results[f"fastnet@{args.baseline}"][name]
            row["baseline_seconds"], row["baseline_speedup"] = base["seconds"], b["seconds"] / base["seconds"]
            line += f"; fastnet@{args.baseline} {base['seconds']:.3f} s, {row['baseline_speedup']:.2f}x"
        rows.append(row)
        print(line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"environment": env, "repeats": repeats, "quick": args.quick, "rows": rows,
                       "results": results}, f, indent=1, default=str)
    return rows


if __name__ == "__main__":
    main()
