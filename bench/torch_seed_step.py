# SPDX-License-Identifier: Apache-2.0
# The seed model's training step in PyTorch on the CPU, printed like bench_host_seed_step.
#   /usr/bin/python3 bench/torch_seed_step.py [steps]
import sys
import time

import torch
from torch import nn

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
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


for _ in range(50):
    step()
times = []
for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append((time.perf_counter() - start) * 1e6)
times.sort()
print(f"seed model 10-20-10-2, batch 64, SGD lr 0.01, PyTorch {torch.__version__} CPU, "
      f"{torch.get_num_threads()} threads")
print(f"{'torch eager':<28} median {times[len(times) // 2]:8.1f} us   p10 {times[len(times) // 10]:8.1f}   "
      f"p90 {times[len(times) * 9 // 10]:8.1f}   ({steps} steps)")
