"""``fastnet history``: the saved asv results, drawn offline.

asv's own report (``asv publish``) loads its JavaScript from the internet, so
without a connection it shows nothing.  This reads asv's results folder
(``.asv/results`` by default: one folder per machine, one JSON per commit and
environment) with asv's own reader and writes, into ``--out``:

* one PNG per machine and benchmark, against commit order (each commit's
  short hash and date on the axis), one line per parameter set (and per asv
  environment, where there are several): ``time_*`` benchmarks with a
  ``batch`` parameter as throughput, samples/s = batch / time; other
  ``time_*`` benchmarks as time; ``peakmem_*`` in MiB; ``track_*`` as
  recorded;
* on each line of a time or memory benchmark, the regressions asv would
  flag: asv's own step detection (``asv.step_detect``, each point weighted
  by its 99% interval as asv weights it) with asv's default threshold of 5%,
  a red triangle at the first commit after the step (the slower side),
  labelled with its size;
* ``index.html``, a static page that shows them and loads nothing from the
  internet, so it opens anywhere.

Timings of one sample, which ``asv run --quick`` records, are noise and are
left out (``--include-quick`` draws them).
Commits are ordered by their commit date, as asv records it.
"""

import argparse
import datetime
import html
import itertools
import json
import math
import os
import re
import sys

#: asv's default regressions_thresholds: steps smaller than 5% are not reported
THRESHOLD = 0.05


def _asv():
    try:
        from asv import results as asv_results
        from asv import step_detect
    except ImportError:
        raise ImportError("fastnet history reads asv's results with asv: pip install asv "
                          "(it is in the [test] extra)") from None
    return asv_results, step_detect


def _weight(stats):
    from asv import _stats

    return _stats.get_weight(stats) if isinstance(stats, dict) else None


def _single_sample(stats):
    """Whether a timing was one sample of one call: what ``asv run --quick`` records."""
    return isinstance(stats, dict) and stats.get("repeat") == 1 and stats.get("number") == 1


def load(results_dir, include_quick=False):
    """``{machine: {"commits": [(hash, date)], "machine": info, "series": {benchmark:
    {(env, params): {commit index: (value, weight)}}}, "meta": {benchmark: asv's description},
    "quick_left_out": n}}``.  Timings of one sample, which ``--quick`` records, are
    left out unless ``include_quick``."""
    asv_results, _ = _asv()
    if not os.path.isdir(results_dir):
        raise FileNotFoundError(f"no asv results folder {results_dir!r}: record some with 'asv run' "
                                "(see the README's Benchmarks section)")
    meta = {}
    bench_json = os.path.join(results_dir, "benchmarks.json")
    if os.path.exists(bench_json):
        with open(bench_json) as f:
            meta = {k: v for k, v in json.load(f).items() if isinstance(v, dict)}
    runs = {}
    for root, filename, machine in asv_results.iter_results_paths(results_dir):
        res = asv_results.Results.load(os.path.join(root, filename), machine)
        runs.setdefault(machine, []).append(res)
    out = {}
    for machine, results in runs.items():
        commits = sorted({(r.date or 0, r.commit_hash) for r in results})
        index = {h: i for i, (_, h) in enumerate(commits)}
        series, quick = {}, 0
        for res in results:
            for key in res.get_all_result_keys():
                params = res.get_result_params(key) or []
                values, stats = res.get_result_value(key, params), res.get_result_stats(key, params)
                if not params:
                    values, stats = [values], [stats]
                stats = stats if isinstance(stats, list) else [None] * len(values)
                for combo, value, st in zip(itertools.product(*params), values, stats, strict=False):
                    if value is None or (isinstance(value, float) and math.isnan(value)):
                        continue  # a failed or skipped benchmark
                    if _single_sample(st) and not include_quick:
                        quick += 1
                        continue
                    # (value, asv's weight of the point: from its 99% interval, None if unknown)
                    series.setdefault(key, {}).setdefault((res.env_name, combo), {})[
                        index[res.commit_hash]] = (float(value), _weight(st))
        info = {}
        machine_json = os.path.join(results_dir, machine, "machine.json")
        if os.path.exists(machine_json):
            with open(machine_json) as f:
                info = json.load(f)
        used = sorted({i for bench in series.values() for points in bench.values() for i in points})
        renumber = {old: new for new, old in enumerate(used)}  # commits left with no result dropped
        series = {bench: {k: {renumber[i]: v for i, v in points.items()} for k, points in by.items()}
                  for bench, by in series.items()}
        out[machine] = {"commits": [(commits[i][1], commits[i][0]) for i in used], "series": series,
                        "meta": meta, "machine": info, "quick_left_out": quick}
    if not out:
        raise FileNotFoundError(f"no asv results in {results_dir!r}: record some with 'asv run'")
    return out


def regressions(values, weights=None, threshold=THRESHOLD):
    """The regressions asv would flag in ``values`` (a list in commit order, None
    where missing; larger is worse), with asv's weights of the points (from
    their 99% intervals; None: equal): ``[(index after the step, relative size)]``."""
    _, step_detect = _asv()
    if sum(v is not None for v in values) < 2:
        return []
    steps = step_detect.detect_steps(values, weights)
    _, _, positions = step_detect.detect_regressions(steps, threshold=threshold)
    return [(after, value_after / value_before - 1.0)
            for _, after, value_before, value_after in (positions or [])]


def _kind(bench, meta):
    """asv's benchmark type: "time", "peakmemory", "memory" or "track"."""
    prefix = bench.rsplit(".", 1)[-1].split("_", 1)[0]
    return meta.get("type") or {"peakmem": "peakmemory", "mem": "memory"}.get(prefix, prefix)


def _quantity(bench, meta):
    """(label, transform(value, params dict) -> y) for a benchmark."""
    kind = _kind(bench, meta)
    names = meta.get("param_names") or []
    if kind == "time" and "batch" in names:
        return "samples/s (batch / time)", lambda v, p: float(p["batch"]) / v
    if kind == "time":
        return "seconds", lambda v, p: v
    if kind in ("peakmemory", "memory"):
        return "memory, MiB", lambda v, p: v / 2**20
    return meta.get("unit") or "value", lambda v, p: v


def train_step_flops(batch, sizes):
    """The matrix products' floating-point operations of one training step of an
    MLP with layer ``sizes`` (e.g. "784-256-256-10"): x @ w and x.T @ dz for every
    layer, dz @ w.T for all but the first; a multiply-add counts 2."""
    widths = [int(v) for v in str(sizes).split("-")]
    products = [a * b for a, b in zip(widths[:-1], widths[1:], strict=True)]
    return 2.0 * batch * (2 * sum(products) + sum(products[1:]))


def _gflops(bench, meta):
    """The GFLOP/s quantity of a train-step benchmark whose parameters give its
    batch and layer sizes, else None."""
    names = meta.get("param_names") or []
    if not (bench.endswith("time_train_step") and "batch" in names and "sizes" in names):
        return None
    return ("GFLOP/s (matrix products / time)",
            lambda v, p: train_step_flops(int(p["batch"]), p["sizes"]) / v / 1e9)


def _label(env, combo, names, envs, varying):
    parts = [f"{n}={_param_text(v)}" for i, (n, v) in enumerate(zip(names, combo, strict=False))
             if i in varying]
    if len(envs) > 1:
        parts.append(env)
    return ", ".join(parts) or "value"


def _param_text(value):
    text = str(value)
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" else text


def plot_benchmark(path, bench, series, commits, meta, quantity=None):
    """One PNG: the benchmark's parameter sets against commit order, regressions
    marked; ``quantity`` (label, transform) overrides the benchmark's own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ylabel, transform = quantity or _quantity(bench, meta)
    names = meta.get("param_names") or []
    envs = {env for env, _ in series}
    combos = [combo for _, combo in series]
    width = max((len(c) for c in combos), default=0)
    # parameters with one value over all lines go into the title, the others into the legend
    varying = {i for i in range(width) if len({c[i] for c in combos if len(c) > i}) > 1}
    fixed = ", ".join(f"{n}={_param_text(combos[0][i])}" for i, n in enumerate(names[:width])
                      if i not in varying)
    n = len(commits)
    # asv takes larger as worse: right for times and memory, not for track_* throughputs
    judged = _kind(bench, meta) in ("time", "peakmemory", "memory")
    fig, ax = plt.subplots(figsize=(max(9.0, 0.9 * n + 6.0), 4.8))
    colors = plt.get_cmap("tab20").colors
    styles = {}  # a line style per value of the first parameter (the backend, in fastnet's suite)
    flagged = 0
    for k, ((env, combo), points) in enumerate(sorted(series.items(), key=lambda kv: str(kv[0]))):
        params = dict(zip(names, (_param_text(v) for v in combo), strict=False))
        xs = sorted(points)
        ys = [transform(points[i][0], params) for i in xs]
        style = styles.setdefault(combo[:1], ("-", "--", ":", "-.")[len(styles) % 4])
        ax.plot(xs, ys, marker="o", ms=3.5, lw=1.2, ls=style, color=colors[k % len(colors)],
                label=_label(env, combo, names, envs, varying))
        if not judged:
            continue
        raw = [points[i][0] if i in points else None for i in range(n)]
        weights = [points[i][1] if i in points else None for i in range(n)]
        for after, size in regressions(raw, weights):
            flagged += 1
            y = transform(points[after][0], params)
            ax.plot([after], [y], marker="v", ms=10, color="red", zorder=5)
            ax.annotate(f"+{100 * size:.0f}%", (after, y), textcoords="offset points", xytext=(4, -14),
                        fontsize=7, color="red")
    ax.set_xticks(range(n), [f"{h[:8]}\n{_date(d)}" for h, d in commits], fontsize=7)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("commit (in commit-date order)")
    ax.set_ylabel(ylabel)
    if "samples/s" in ylabel or "seconds" in ylabel:
        ax.set_yscale("log")
    title = bench + (f"\n{fixed}" if fixed else "")
    title += f"  ({flagged} regression{'s' if flagged != 1 else ''} flagged)" if flagged else ""
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return flagged


def _date(ms):
    if not ms:
        return "?"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%d")


def write_history(results_dir, out_dir, bench_filter=None, include_quick=False):
    """Draw every benchmark of every machine; returns the index.html path."""
    data = load(results_dir, include_quick)
    os.makedirs(out_dir, exist_ok=True)
    pattern = re.compile(bench_filter) if bench_filter else None
    sections = []
    for machine, d in sorted(data.items()):
        items = []
        for bench in sorted(d["series"]):
            if pattern is not None and not pattern.search(bench):
                continue
            meta = d["meta"].get(bench, {})
            name = re.sub(r"[^\w.-]+", "_", f"{machine}-{bench}") + ".png"
            flagged = plot_benchmark(os.path.join(out_dir, name), bench, d["series"][bench], d["commits"],
                                     meta)
            items.append((bench, name, flagged))
            gflops = _gflops(bench, meta)
            if gflops is not None:  # the same times as GFLOP/s
                name = name[:-4] + "-gflops.png"
                plot_benchmark(os.path.join(out_dir, name), bench, d["series"][bench], d["commits"], meta,
                               gflops)
                items.append((bench + " (GFLOP/s)", name, flagged))
        sections.append((machine, d, items))
    index = os.path.join(out_dir, "index.html")
    with open(index, "w") as f:
        f.write(_html(sections, results_dir))
    return index


def _html(sections, results_dir):
    e = html.escape
    body = [f"<h1>fastnet: asv history</h1><p>From <code>{e(os.path.abspath(results_dir))}</code>, "
            f"drawn by <code>fastnet history</code> on {datetime.date.today()}. Regressions are asv's "
            f"(its step detection, threshold {100 * THRESHOLD:.0f}%): red triangles.</p>"]
    for machine, d, items in sections:
        info = ", ".join(f"{k} {v}" for k, v in d["machine"].items() if k in ("cpu", "num_cpu", "os", "ram"))
        body.append(f"<h2>machine {e(machine)}</h2><p>{e(info)}</p><p>{len(d['commits'])} commits: "
                    + ", ".join(f"<code>{e(h[:8])}</code> {e(_date(t))}" for h, t in d["commits"]) + "</p>")
        if d["quick_left_out"]:
            body.append(f"<p>{d['quick_left_out']} timings of one sample (recorded by <code>asv run "
                        "--quick</code>) left out; <code>--include-quick</code> draws them.</p>")
        body.append("<ul>" + "".join(f'<li><a href="#{e(name)}">{e(bench)}</a>'
                                     + (f' <b style="color:#c00">{flagged} flagged</b>' if flagged else "")
                                     + "</li>" for bench, name, flagged in items) + "</ul>")
        for bench, name, _ in items:
            body.append(f'<h3 id="{e(name)}">{e(bench)}</h3><img src="{e(name)}" alt="{e(bench)}">')
    style = ("body{font-family:sans-serif;max-width:1400px;margin:1em auto;padding:0 1em}"
             "img{max-width:100%;border:1px solid #ddd}code{background:#f4f4f4}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>fastnet asv history</title>"
            f"<style>{style}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnet history", description=__doc__.splitlines()[0].replace(
        "``", "") + " PNGs and a static index.html that needs no internet.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--results", default=os.path.join(".asv", "results"), help="asv's results folder")
    parser.add_argument("--out", default="history-out", help="folder for the PNGs and index.html")
    parser.add_argument("--bench", default=None, help="only benchmarks whose name matches this regex")
    parser.add_argument("--include-quick", action="store_true",
                        help="also draw timings of one sample, which 'asv run --quick' records")
    args = parser.parse_args(argv)
    if args.bench is not None:
        try:
            re.compile(args.bench)
        except re.error as exc:
            parser.error(f"argument --bench: not a regular expression: {exc}")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("fastnet history draws with matplotlib: pip install 'fastnet-dense[plot]'")
    index = write_history(args.results, args.out, args.bench, args.include_quick)
    print(f"wrote {index} and its PNGs; open it in any browser (it loads nothing from the internet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
