# SPDX-License-Identifier: Apache-2.0
# The seed model's training step in PyTorch on the CPU, printed like bench_host_seed_step.
#   /usr/bin/python3 bench/torch_seed_step.py [steps] [--json PATH]
# The second row splits the batch into 4 micro-batches whose gradients add up (GPipe's result, run
# one after another: PyTorch has no pipeline here), the counterpart of tandem's GPipe m=4 row.
# --json writes both medians in bench_gpu_step's schema, for bench/compare.py.
import json
import sys
import time

import torch
from torch import nn

args = sys.argv[1:]
json_path = None
if "--json" in args:
    at = args.index("--json")
    if at + 1 == len(args):
        sys.exit("usage: torch_seed_step.py [steps] [--json PATH]")
    json_path = args[at + 1]
    del args[at:at + 2]
steps = int(args[0]) if args else 2000
torch.manual_seed(0)
part1 = nn.Sequential(nn.Linear(10, 20), nn.ReLU())
part2 = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 2))
params = list(part1.parameters()) + list(part2.parameters())
opt = torch.optim.SGD(params, lr=0.01)
loss_fn = nn.CrossEntropyLoss()
x = torch.rand(64, 10) * 2 - 1
y = torch.randint(0, 2, (64,))


def step():
    opt.zero_grad()
    loss = loss_fn(part2(part1(x)), y)
    loss.backward()
    opt.step()
    return loss.item()  # the value comes back to the caller, as train_step's does


def step_micro(m=4):
    opt.zero_grad()
    total = 0
    for xc, yc in zip(x.chunk(m), y.chunk(m)):
        loss = loss_fn(part2(part1(xc)), yc) * (xc.shape[0] / x.shape[0])
        loss.backward()
        total = total + loss.detach()
    opt.step()
    return total.item()


def measure(fn):
    for _ in range(50):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    return times[len(times) // 2], times[len(times) // 10], times[len(times) * 9 // 10]


print(f"seed model 10-20-10-2, batch 64, SGD lr 0.01, PyTorch {torch.__version__} CPU, "
      f"{torch.get_num_threads()} threads")
rows = []
for name, wid, label, fn in (("torch eager", "seed", "seed model 10-20-10-2", step),
                             ("torch eager, 4 micro", "seed_gpipe4", "seed model 10-20-10-2, GPipe m=4", step_micro)):
    median, p10, p90 = measure(fn)
    print(f"{name:<28} median {median:8.1f} us   p10 {p10:8.1f}   p90 {p90:8.1f}   ({steps} steps)")
    rows.append({"workload": wid, "label": label, "variant": "torch eager", "input": "host tensors", "batch": 64,
                 "steps": steps, "warmup": 50, "median_us": median, "p10_us": p10, "p90_us": p90,
                 "flop": 6.0 * 64 * 420})
if json_path:
    with open(json_path, "w") as f:
        json.dump({"schema": "tandem-bench/1", "impl": "torch", "device": "cpu",
                   "machine": {"torch": torch.__version__, "threads": torch.get_num_threads()}, "skipped": None,
                   "results": rows}, f, indent=1)
        f.write("\n")
