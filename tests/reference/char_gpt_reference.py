# SPDX-License-Identifier: Apache-2.0
"""Example 06's run against PyTorch (test reference.char_gpt).

Reads the run the example left in a folder (run.json, init.safetensors, model.safetensors) and:
1. loads tandem's trained checkpoint into the same module tree with load_state_dict(strict=True)
   and predicts the next character at every held-out position: at least 99 % must agree with
   tandem's own predictions (ties between near-equal logits may round either way);
2. trains PyTorch (float32, AdamW, whole batches) from tandem's initial weights on the same
   batches for the same steps, and compares its held-out loss with tandem's: within 2 %.
Prints both losses in bits per character and the BLAS PyTorch ran on.

usage: char_gpt_reference.py <folder>
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from transformer_reference import CausalSelfAttention, PositionalEmbedding, Residual  # noqa: E402

V, D, H = 96, 128, 4


def model_for(seq):
    def blocks():
        return [Residual(nn.LayerNorm(D), CausalSelfAttention(D, H, seq)),
                Residual(nn.LayerNorm(D), nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))]

    model = nn.Sequential()
    model.add_module("stage0", nn.Sequential(nn.Embedding(V, D), PositionalEmbedding(seq, D), *blocks(), *blocks()))
    model.add_module("stage1", nn.Sequential(*blocks(), *blocks(), nn.LayerNorm(D), nn.Linear(D, V)))
    return model


def corpus(run):
    text = b""
    for path in run["texts"]:
        with open(path, "rb") as f:
            text += f.read()
    keep = bytes(c for c in text if c == 10 or 32 <= c <= 126)
    alphabet = run["alphabet"]
    if sorted(set(keep)) != alphabet:
        raise SystemExit("the text's characters differ from the example's vocabulary")
    index = {c: i for i, c in enumerate(alphabet)}
    return torch.tensor([index[c] for c in keep], dtype=torch.long)


def sequences(ids, starts, seq):
    x = torch.stack([ids[s:s + seq] for s in starts])
    y = torch.stack([ids[s + 1:s + seq + 1] for s in starts])
    return x, y.flatten()


def main(folder):
    with open(os.path.join(folder, "run.json")) as f:
        run = json.load(f)
    seq, batch, stride, steps = run["seq"], run["batch"], run["stride"], run["steps"]
    ids = corpus(run)
    training = len(ids) // 10 * 9
    held_x, held_y = sequences(ids, run["held_out"], seq)
    loss_fn = nn.CrossEntropyLoss()

    # 1. tandem's checkpoint in PyTorch.
    trained = model_for(seq)
    trained.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
    with torch.no_grad():
        predictions = trained(held_x).reshape(-1, V)[:, :len(run["alphabet"])].argmax(dim=1).tolist()
    agree = sum(int(a == b) for a, b in zip(predictions, run["predictions"]))
    print(f"tandem's checkpoint in PyTorch: {agree} of {len(predictions)} held-out predictions agree")

    # 2. PyTorch's own training from tandem's initial weights, on the same batches.
    torch.manual_seed(0)
    model = model_for(seq)
    model.load_state_dict(load_file(os.path.join(folder, "init.safetensors")), strict=True)
    opt = torch.optim.AdamW(model.parameters(), lr=run["lr"], weight_decay=run["weight_decay"])
    for step in range(steps):
        starts = [(step * batch + b) * stride % (training - seq - 1) for b in range(batch)]
        x, y = sequences(ids, starts, seq)
        opt.zero_grad()
        loss = loss_fn(model(x).reshape(-1, V), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        nats = loss_fn(model(held_x).reshape(-1, V), held_y).item()
    ours = run["held_out_nats"]
    gap = abs(ours - nats) / nats
    print(f"held-out loss after {steps} steps: tandem {ours / math.log(2):.4f} bits per character, PyTorch "
          f"{nats / math.log(2):.4f} ({100 * gap:.2f} % apart); PyTorch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    ok = agree >= 0.99 * len(predictions) and gap <= 0.02
    print("passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1]))
