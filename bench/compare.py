# SPDX-License-Identifier: Apache-2.0
"""Puts tandem's and PyTorch's step times side by side: reads the JSON of bench_gpu_step (or
bench_host_seed_step) and of torch_gpu_step.py (or torch_seed_step.py), prints one table with
speed-ups, and draws a bar chart where matplotlib is installed.

  python3 bench/compare.py TANDEM.json TORCH.json [--png PATH] [--markdown PATH] [--title TEXT]

A speed-up is PyTorch's median step time over tandem's: above 1, tandem is faster. One row per
workload and tandem variant, beside PyTorch's eager step and its CUDA-graph step (where measured).
A missing, empty or unreadable file, or one from a run that was skipped (no GPU), is reported and
the table is printed from what there is; the exit status is 0 unless the arguments are wrong, so
a script can run this whatever the benchmarks managed to do.
"""
import argparse
import json
import os
import sys

SCHEMA = "tandem-bench/1"
TORCH_VARIANTS = ("torch eager", "torch graph")


def load(path, impl):
    """(document or None, note or None). A note says why the file gives nothing or what is odd."""
    if not path or not os.path.exists(path):
        return None, f"{impl}: {path or '(none)'} does not exist (the benchmark did not run or did not finish)"
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        return None, f"{impl}: cannot read {path}: {e}"
    if not text.strip():
        return None, f"{impl}: {path} is empty (the benchmark was stopped before it wrote its results?)"
    try:
        doc = json.loads(text)
    except ValueError as e:
        return None, f"{impl}: {path} is not valid JSON ({e})"
    if not isinstance(doc, dict) or not isinstance(doc.get("results", []), list):
        return None, f"{impl}: {path} is not a benchmark result file"
    note = None
    if doc.get("impl") not in (None, impl):
        note = f"{impl}: {path} holds {doc.get('impl')!r} results (arguments swapped? tandem's file comes first)"
    elif doc.get("schema") != SCHEMA:
        note = f"{impl}: {path} has schema {doc.get('schema')!r}, expected {SCHEMA!r}; reading it anyway"
    if doc.get("skipped"):
        return doc, "; ".join(n for n in (note, f"{impl}: skipped: {doc['skipped']}") if n)
    if not doc.get("results"):
        return doc, note or f"{impl}: {path} holds no results"
    return doc, note


def usable(r):
    return isinstance(r, dict) and not r.get("error") and (r.get("median_us") or 0) > 0


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 10000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} us"


def fmt_ratio(torch_us, tandem_us):
    if torch_us is None or tandem_us is None:
        return "-"
    return f"{torch_us / tandem_us:.2f}x"


def fmt_tflops(r):
    if not usable(r) or not r.get("flop"):
        return "-"
    t = r["flop"] / r["median_us"] / 1e6
    return f"{t:.1f}" if t >= 0.1 else "-"


def build_rows(tandem, torch):
    """One row per (workload, tandem variant), in the order the files list them."""
    order = []
    for doc in (tandem, torch):
        for r in (doc or {}).get("results", []):
            if isinstance(r, dict) and r.get("workload") not in order:
                order.append(r.get("workload"))
    rows, notes = [], []
    for wid in order:
        ours = [r for r in (tandem or {}).get("results", []) if isinstance(r, dict) and r.get("workload") == wid]
        theirs = {r.get("variant"): r for r in (torch or {}).get("results", [])
                  if isinstance(r, dict) and r.get("workload") == wid}
        label = next((r.get("label") for r in ours + list(theirs.values()) if r.get("label")), wid)
        batches = {r.get("batch") for r in ours + list(theirs.values()) if usable(r)}
        if len(batches) > 1:
            notes.append(f"{wid}: the two runs used different batches {sorted(batches)}; the ratios compare unlike steps")
        for r in list(theirs.values()) + ours:
            if r.get("error"):
                notes.append(f"{wid} ({r.get('variant', '?')}) failed: {r['error']}")
        torch_us = {v: (theirs[v]["median_us"] if v in theirs and usable(theirs[v]) else None) for v in TORCH_VARIANTS}
        for r in ours or [{"variant": "tandem"}]:
            ours_us = r["median_us"] if usable(r) else None
            batch = r.get("batch") or next((t.get("batch") for t in theirs.values() if t.get("batch")), None)
            rows.append({
                "workload": wid, "label": label, "batch": batch, "variant": r.get("variant", "tandem"),
                "tandem_us": ours_us, "torch": torch_us, "tandem_tflops": fmt_tflops(r),
                "eager_tflops": fmt_tflops(theirs.get("torch eager")),
            })
    return rows, notes


HEADER = ["workload", "batch", "tandem", "tandem us", "torch eager", "torch graph", "vs eager", "vs graph",
          "TFLOP/s tandem", "TFLOP/s eager"]


def cells(row):
    return [row["label"], str(row["batch"] or "-"), row["variant"], fmt_us(row["tandem_us"]),
            fmt_us(row["torch"]["torch eager"]), fmt_us(row["torch"]["torch graph"]),
            fmt_ratio(row["torch"]["torch eager"], row["tandem_us"]),
            fmt_ratio(row["torch"]["torch graph"], row["tandem_us"]), row["tandem_tflops"], row["eager_tflops"]]


def describe(doc, impl):
    if not doc:
        return f"{impl}: -"
    machine = doc.get("machine") or {}
    extra = f", PyTorch {machine['torch']}" if machine.get("torch") else ""
    inputs = {r.get("input") for r in doc.get("results", []) if isinstance(r, dict) and r.get("input")}
    if inputs:
        extra += f"; input: {', '.join(sorted(inputs))}"
    return f"{impl}: {doc.get('device', '?')}{extra}"


def text_table(rows):
    table = [HEADER] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(table):
        out.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADER))) + "|"]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def bar_chart(rows, path, title):
    """Grouped bars per workload, log scale: tandem's variants and PyTorch's two steps."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display on a GPU machine
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no PNG: matplotlib is not installed for {sys.executable} (the table above has every number)"
    groups = []  # (label, [(series, us)])
    for r in rows:
        name = f"{r['label']}\nbatch {r['batch']}"
        if not groups or groups[-1][0] != name:
            groups.append((name, [(k, v) for k, v in r["torch"].items()]))
        groups[-1][1].append((r["variant"], r["tandem_us"]))
    series = []
    for _, bars in groups:
        for k, _ in bars:
            if k not in series:
                series.append(k)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(groups)), 4.5))
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        xs, ys = [], []
        for g, (_, bars) in enumerate(groups):
            value = dict(bars).get(s)
            if value:
                xs.append(g + (i - (len(series) - 1) / 2) * width)
                ys.append(value)
        ax.bar(xs, ys, width, label=s)
    ax.set_yscale("log")
    ax.set_ylabel("median step time (us, log scale; lower is faster)")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"bar chart: {path}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tandem", help="bench_gpu_step --json (or bench_host_seed_step --json) output")
    parser.add_argument("torch", help="torch_gpu_step.py --json (or torch_seed_step.py --json) output")
    parser.add_argument("--png", help="write a bar chart here (needs matplotlib)")
    parser.add_argument("--markdown", help="also write the table as Markdown here")
    parser.add_argument("--title", default="one training step: tandem vs PyTorch")
    args = parser.parse_args()

    tandem, tandem_note = load(args.tandem, "tandem")
    torch, torch_note = load(args.torch, "torch")
    rows, notes = build_rows(tandem, torch)
    notes = [n for n in (tandem_note, torch_note) if n] + notes
    # The host backend calls the CPU "host", PyTorch calls it "cpu": the same place.
    same = {"host": "cpu"}
    if tandem and torch and tandem.get("device") and torch.get("device") \
            and same.get(tandem["device"], tandem["device"]) != same.get(torch["device"], torch["device"]) \
            and tandem.get("results") and torch.get("results"):
        notes.append(f"the two ran on different devices ({tandem['device']} vs {torch['device']})")

    print(args.title)
    print(describe(tandem, "tandem") + "   |   " + describe(torch, "torch"))
    if rows:
        print(text_table(rows))
        print("vs eager / vs graph: PyTorch's median step time over tandem's (above 1: tandem is faster)")
    else:
        print("(no results to compare)")
    for n in notes:
        print(f"note: {n}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"{args.title}\n\n{describe(tandem, 'tandem')}; {describe(torch, 'torch')}\n\n")
            f.write((markdown_table(rows) if rows else "(no results to compare)") + "\n")
            for n in notes:
                f.write(f"\nnote: {n}\n")
    if args.png:
        if any(r["tandem_us"] or any(r["torch"].values()) for r in rows):
            print(bar_chart(rows, args.png, args.title))
        else:
            print("no PNG: no timings to draw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
