"""The profiler's picture: throughput against batch size, and where the time goes."""

import numpy as np

from fastnet.profiler import PHASES

_COLORS = {"numba": "tab:red", "numpy": "tab:blue", "torch": "tab:orange", "jax": "tab:green"}
_PHASE_COLORS = dict(zip(PHASES, ["tab:blue", "tab:orange", "tab:green", "tab:olive", "tab:purple",
                                  "tab:brown", "tab:red", "lightgray"], strict=True))


def plot_profile(results, path):
    """Write a PNG: per configuration, train-step throughput (log-log) with the
    roofline and knees, then the phase shares of each fastnet backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    configs = sorted({(r["width"], r["activation"], r["dtype"]) for r in rows})
    ours = [b for b in ("numpy", "numba") if any(r["backend"] == b for r in rows)]
    ncols = 1 + len(ours)
    fig, axes = plt.subplots(len(configs), ncols, figsize=(5.2 * ncols, 4.2 * len(configs)),
                             squeeze=False)
    env = results["env"]
    for (width, activation, dtype), ax_row in zip(configs, axes, strict=True):
        mine = [r for r in rows if (r["width"], r["activation"], r["dtype"]) == (width, activation, dtype)
                and r["op"] == "train_step"]
        ax = ax_row[0]
        names = sorted({r["backend"] for r in mine}, key=lambda s: (s not in ours, s))
        for name in names:
            pts = sorted((r["batch"], r["samples_per_s"]) for r in mine if r["backend"] == name)
            b, v = np.array(pts).T
            ax.plot(b, v, "o-", ms=3, label=name, color=_COLORS.get(name))
            k = results["knees"].get(f"{width}/{activation}/{dtype}/{name}")
            if k is not None:
                ax.plot([k], [dict(pts)[k]], marker="v", ms=10, color=_COLORS.get(name),
                        markeredgecolor="black")
        blas = sorted({(r["batch"], r["batch"] / r["bare_blas_us"] * 1e6) for r in mine})
        b, v = np.array(blas).T
        ax.plot(b, v, "k--", lw=1, label="bare BLAS, same shapes")
        peak = results["peak_gflops"].get(dtype)
        if peak:
            ax.axhline(peak * 1e9 / (4.0 * width * width), color="gray", ls=":", lw=1,
                       label=f"GEMM peak {peak:.0f} GFLOP/s")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("train steps x batch / s (samples/s)")
        ax.set_title(f"{width}x{width} {activation} {dtype}: train step (knees marked v)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        for ax, name in zip(ax_row[1:], ours, strict=True):
            _phase_bars(ax, [r for r in mine if r["backend"] == name], name)
    fig.suptitle(f"fastnet profile on {env['cpu']}, {env['cores']} cores, "
                 f"{results['settings']['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _phase_bars(ax, rows, name):
    rows = sorted(rows, key=lambda r: r["batch"])
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for phase in PHASES:
        us = np.array([max(r.get(f"phase_{phase}_us", 0.0), 0.0) for r in rows])
        total = np.array([sum(max(r.get(f"phase_{p}_us", 0.0), 0.0) for p in PHASES) for r in rows])
        share = us / total
        ax.bar(x, share, bottom=bottom, color=_PHASE_COLORS[phase], label=phase.replace("_", " "))
        bottom += share
    ax.set_xticks(x, [str(r["batch"]) for r in rows], rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_xlabel("batch size")
    ax.set_ylabel("share of train-step time")
    ax.set_title(f"{name}: where the train step's time goes", fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
