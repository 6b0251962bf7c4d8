# SPDX-License-Identifier: Apache-2.0
"""PyTorch's side of bench_gpu_step: the same training steps (SGD, cross-entropy, two stages on one
GPU), timed eagerly and with the whole step captured in a CUDA graph, written as the same JSON.

  python3 bench/torch_gpu_step.py [--json PATH] [--only ID,ID] [--steps N] [--warmup N]
                                  [--seconds S] [--batch-div D] [--device cuda|cpu]

Workloads (IDs): seed (10-20-10-2, batch 64), seed_gpipe4 (the same in 4 micro-batches whose
gradients add up, as GPipe's do), mlp256 (8 Linear 256->256, ReLU between, batch 1024), mlp4096
(4 Linear 4096->4096, batch 8192), mlp4096_tf32 (the same with TF32 matmuls) and mlp4096_bf16
(the same under bfloat16 autocast). Inputs stay on the GPU. Each step returns the loss to Python
(.item()), as tandem's train_step returns it, so each timed step includes the wait for its work.
fp32 with TF32 off except in those two.

Without CUDA it says so, writes a JSON file with no results (if asked) and exits 0. --device cpu
runs the eager steps on the CPU instead, to check this script on a machine without a GPU.
Works with PyTorch 1.13 through 2.x.
"""
import argparse
import contextlib
import json
import platform
import sys
import time

import torch
from torch import nn

WORKLOADS = [
    # id, label, widths of the Linear layers (stage 0 takes the first half), batch, micro-batches,
    # precision of the matmuls, default timed steps, default warm-up steps; as in bench/gpu_step.cu.
    # "bf16" is torch.autocast(dtype=torch.bfloat16) around the forward, float32 master weights.
    ("seed", "seed model 10-20-10-2", None, 64, 1, "fp32", 2000, 200),
    ("seed_gpipe4", "seed model 10-20-10-2, GPipe m=4", None, 64, 4, "fp32", 2000, 200),
    ("mlp256", "MLP 256 wide, 8 Linear", [256] * 9, 1024, 1, "fp32", 1000, 100),
    ("mlp4096", "MLP 4096 wide, 4 Linear", [4096] * 5, 8192, 1, "fp32", 100, 5),
    ("mlp4096_tf32", "MLP 4096 wide, 4 Linear, TF32", [4096] * 5, 8192, 1, "tf32", 100, 5),
    ("mlp4096_bf16", "MLP 4096 wide, 4 Linear, bf16", [4096] * 5, 8192, 1, "bf16", 100, 5),
]


def build(widths, device):
    """Two nn.Sequential stages, split as bench_gpu_step's Pipelines are."""
    if widths is None:  # the seed model: stage 0 is Linear(10, 20), ReLU
        return (nn.Sequential(nn.Linear(10, 20), nn.ReLU()).to(device),
                nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 2)).to(device), 10, 2)
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i + 2 < len(widths):
            layers.append(nn.ReLU())
    # A ReLU belongs with the Linear before it: stage 0 ends with the ReLU after its last Linear.
    cut = 2 * ((len(widths) - 1) // 2)
    return nn.Sequential(*layers[:cut]).to(device), nn.Sequential(*layers[cut:]).to(device), widths[0], widths[-1]


def nominal_flop(part1, part2, batch):
    """6 * batch * sum of in*out over the Linear layers, as bench_gpu_step counts (biases left out)."""
    macs = sum(m.in_features * m.out_features for p in (part1, part2) for m in p if isinstance(m, nn.Linear))
    return 6.0 * batch * macs


def set_tf32(on):
    """TF32 for float matmuls: the fp32_precision setting where this PyTorch has it (2.9 on), whose
    docs say allow_tf32 goes away; allow_tf32 on older ones. Only one of the two is touched, since
    newer versions warn or refuse when both are mixed."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "tf32" if on else "ieee"
    else:
        matmul.allow_tf32 = on


def percentiles(times):
    times = sorted(times)
    return times[len(times) // 2], times[len(times) // 10], times[len(times) * 9 // 10]


def time_steps(step, steps, warmup, seconds, sync):
    """Warm-up, then at most `steps` timed steps but no more than `seconds` of them (at least 5)."""
    loss = None
    for _ in range(warmup):
        loss = step()
    sync()
    times = []
    began = time.perf_counter()
    for i in range(steps):
        if i >= 5 and time.perf_counter() - began > seconds:
            break
        start = time.perf_counter()
        loss = step()
        times.append((time.perf_counter() - start) * 1e6)
    return times, loss


def run(workload, args, device):
    wid, label, widths, nominal_batch, micro, precision, default_steps, default_warmup = workload
    steps = args.steps if args.steps > 0 else default_steps
    warmup = args.warmup if args.warmup >= 0 else default_warmup
    batch = max(nominal_batch // max(args.batch_div, 1), 8)
    torch.manual_seed(0)
    part1, part2, n_in, n_out = build(widths, device)
    params = list(part1.parameters()) + list(part2.parameters())
    opt = torch.optim.SGD(params, lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    # Inputs live on the device and never change: the graph's static inputs, and the eager step's.
    x = torch.rand(batch, n_in, device=device) * 2 - 1
    y = torch.randint(0, n_out, (batch,), device=device)
    xs, ys = x.chunk(micro), y.chunk(micro)

    def forward_backward():
        # Micro-batches: each loss is its chunk's mean scaled by its share of the batch, so the
        # gradients add up to the whole batch's, as tandem's GPipe schedule's do.
        total = None
        for xc, yc in zip(xs, ys):
            with autocast():
                out = part2(part1(xc))
            loss = loss_fn(out.float(), yc)
            if micro > 1:
                loss = loss * (xc.shape[0] / batch)
            loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        return total

    def eager():
        opt.zero_grad(set_to_none=True)
        loss = forward_backward()
        opt.step()
        return loss.item()

    is_cuda = device.type == "cuda"

    def autocast():
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
    sync = torch.cuda.synchronize if is_cuda else (lambda: None)
    flop = nominal_flop(part1, part2, batch)
    base = {"workload": wid, "label": label, "input": "device tensors" if is_cuda else "host tensors",
            "batch": batch, "warmup": warmup, "flop": flop}
    results = []
    if is_cuda:
        set_tf32(precision == "tf32")
    try:
        times, loss = time_steps(eager, steps, warmup, args.seconds, sync)
        results.append(summary(base, "torch eager", times, loss))
        if is_cuda:
            results.append(graph_step(base, forward_backward, opt, steps, warmup, args.seconds, sync))
    finally:
        if is_cuda:
            set_tf32(False)
    return results


def graph_step(base, forward_backward, opt, steps, warmup, seconds, sync):
    """The whole step (forward, backward, optimizer) in one CUDA graph, replayed: the recipe of
    PyTorch's CUDA-graph docs. A few warm-up iterations on a side stream, gradients set to None
    before capture so that backward allocates them from the graph's pool, then capture; each
    replay writes fresh gradients (no zeroing needed) and steps the optimizer."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                forward_backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            static_loss = forward_backward()
            opt.step()

        def replay():
            graph.replay()
            return static_loss.item()

        times, loss = time_steps(replay, steps, warmup, seconds, sync)
        return summary(base, "torch graph", times, loss)
    except Exception as e:  # capture can fail on an old driver or PyTorch: report it, go on
        return dict(base, variant="torch graph", steps=0, median_us=0.0, p10_us=0.0, p90_us=0.0, loss=0.0,
                    error=f"{type(e).__name__}: {e}")


def summary(base, variant, times, loss):
    median, p10, p90 = percentiles(times)
    return dict(base, variant=variant, steps=len(times), median_us=median, p10_us=p10, p90_us=p90,
                loss=float(loss))


def write_json(path, device_name, machine, skipped, results):
    # The schema of bench_gpu_step's --json (see bench/compare.py).
    with open(path, "w") as f:
        json.dump({"schema": "tandem-bench/1", "impl": "torch", "device": device_name, "machine": machine,
                   "skipped": skipped, "results": results}, f, indent=1)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--only", default="", help="comma-separated workload IDs")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default: per workload)")
    parser.add_argument("--warmup", type=int, default=-1, help="warm-up steps (default: per workload)")
    parser.add_argument("--seconds", type=float, default=15.0, help="time cap on one workload's timed steps")
    parser.add_argument("--batch-div", type=int, default=1, help="divide every batch by this (smoke runs)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()

    only = {w for w in args.only.split(",") if w}
    unknown = only - {w[0] for w in WORKLOADS}
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    machine = {"torch": torch.__version__, "python": platform.python_version(),
               "cuda": getattr(torch.version, "cuda", None), "threads": torch.get_num_threads()}
    if args.device == "cuda" and not torch.cuda.is_available():
        why = (f"no CUDA GPU available to PyTorch {torch.__version__} (CUDA build: "
               f"{getattr(torch.version, 'cuda', None)}): nothing to time")
        print(f"torch_gpu_step: {why}")
        if args.json:
            write_json(args.json, "none", machine, why, [])
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
        machine["gpu"] = torch.cuda.current_device()
    else:
        device_name = "cpu"
    print(f"torch_gpu_step: {device_name}, PyTorch {torch.__version__}; one SGD training step, fp32 unless said")

    results, failed = [], 0
    for workload in WORKLOADS:
        if only and workload[0] not in only:
            continue
        try:
            results += run(workload, args, device)
        except Exception as e:  # one failing (out of memory, say) should not cost the others
            print(f"torch_gpu_step: {workload[0]} failed: {type(e).__name__}: {e}", file=sys.stderr)
            results.append({"workload": workload[0], "label": workload[1], "variant": "torch eager",
                            "error": f"{type(e).__name__}: {e}"})
            failed += 1
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(f"{'workload (PyTorch)':<44} {'variant':<12} {'batch':>6} {'steps':>6} {'median us':>11} "
          f"{'p10':>10} {'p90':>10} {'TFLOP/s':>8}")
    for r in results:
        if r.get("error"):
            print(f"{r['label']:<44} {r['variant']:<12} FAILED: {r['error']}")
            continue
        tflops = r["flop"] / r["median_us"] / 1e6 if r["median_us"] > 0 else 0.0
        print(f"{r['label']:<44} {r['variant']:<12} {r['batch']:>6} {r['steps']:>6} {r['median_us']:>11.1f} "
              f"{r['p10_us']:>10.1f} {r['p90_us']:>10.1f} {tflops:>8.2f}")
    if args.json:
        write_json(args.json, device_name, machine, None, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
