# SPDX-License-Identifier: Apache-2.0
# The small GPT's training step in PyTorch on the CPU, printed like bench_host_gpt_step: the same
# network (4 blocks of width 128, 4 heads, sequences of 64, vocabulary 96, 16 sequences, AdamW).
#   /usr/bin/python3 bench/torch_gpt_step.py [steps] [threads...]
# Prints which BLAS library the process loaded (Debian's torch uses libblas.so.3: the reference
# BLAS unless OpenBLAS is installed), then the median step for each thread count (default 1 2).
# Each count runs in a process of its own, with OPENBLAS_NUM_THREADS at 1 and (above 1) at the
# count too: OpenBLAS reads it once, at load, and otherwise starts a thread per core beside
# PyTorch's own (measured here: 2 PyTorch threads over 2 OpenBLAS threads are twice as slow).
import os
import subprocess
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from transformer_reference import CausalSelfAttention, PositionalEmbedding, Residual  # noqa: E402

V, T, D, H, SEQUENCES = 96, 64, 128, 4, 16


def blas():
    """The BLAS shared object this process mapped, resolved through Debian's alternatives."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
    return ", ".join(sorted(os.path.realpath(p) for p in paths)) or "none found"


def block():
    attn = Residual(nn.LayerNorm(D), CausalSelfAttention(D, H, T))
    mlp = Residual(nn.LayerNorm(D), nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
    return [attn, mlp]


def main():
    args = sys.argv[1:]
    steps = int(args[0]) if args else 20
    threads = [int(a) for a in args[1:]] or [1, 2]
    if len(threads) > 1 or "TANDEM_BENCH_CHILD" not in os.environ:
        for n in threads:
            for blas_threads in sorted({1, n}):
                env = dict(os.environ, OPENBLAS_NUM_THREADS=str(blas_threads), TANDEM_BENCH_CHILD="1")
                subprocess.run([sys.executable, __file__, str(steps), str(n)], env=env, check=True)
        return
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(V, D), PositionalEmbedding(T, D), *block(), *block(), *block(), *block(),
                          nn.LayerNorm(D), nn.Linear(D, V))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randint(0, V, (SEQUENCES, T))
    y = torch.randint(0, V, (SEQUENCES * T,))

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x).reshape(-1, V), y)
        loss.backward()
        opt.step()
        return loss.item()

    print(f"PyTorch {torch.__version__} GPT step: {sum(p.numel() for p in model.parameters())} parameters, "
          f"BLAS: {blas()}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    for n in threads:
        torch.set_num_threads(n)
        for _ in range(3):
            step()
        ms = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            ms.append((time.perf_counter() - start) * 1e3)
        ms.sort()
        name = f"PyTorch, {n} thread{'s' if n > 1 else ''} (BLAS {os.environ['OPENBLAS_NUM_THREADS']})"
        print(f"{name:32} median {ms[len(ms) // 2]:8.2f} ms   "
              f"p10 {ms[len(ms) // 10]:8.2f}   p90 {ms[len(ms) * 9 // 10]:8.2f}   ({steps} steps)")


if __name__ == "__main__":
    main()
