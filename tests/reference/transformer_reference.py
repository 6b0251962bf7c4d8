# SPDX-License-Identifier: Apache-2.0
"""The PyTorch side of tandem's transformer reference tests (see transformer_reference.cpp).

kind "layer": builds one layer as torch.nn in float64 with the given parameters, runs it on x
(token ids for an embedding), back-propagates dy, and writes `output`, `grad.input` (not for
token ids) and `grad.NAME` for each parameter.
kind "init": builds that module tree with PyTorch's own initialisation, saves it with safetensors
for tandem to load, and writes the logits of x as `output`.
kind "gpt": builds the pipeline's module tree (one nn.Sequential per stage, named stage0, stage1,
...: the names tandem gives its parameters) in float64, trains it with AdamW on the steps, and
writes `loss.K`, `output` (the evaluation input's logits), `param.NAME` and `grad.NAME`.
Rows are tokens: row b * T + t is position t of sequence b.

usage: transformer_reference.py input.json output.txt
"""
import json
import sys

import torch


class Residual(torch.nn.Sequential):
    """y = x + f(x), its layers named as nn.Sequential names them."""

    def forward(self, x):
        return x + super().forward(x)


class PositionalEmbedding(torch.nn.Module):
    """A learned (T, D) table added by position, as tandem's PositionalEmbedding<T, D>."""

    def __init__(self, seq, dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(seq, dim))

    def forward(self, x):  # (B, T, D)
        return x + self.weight[: x.shape[1]]


class CausalSelfAttention(torch.nn.MultiheadAttention):
    """nn.MultiheadAttention of a sequence with itself, position t seeing positions <= t."""

    def __init__(self, dim, heads, seq):
        super().__init__(dim, heads, batch_first=True)
        self.register_buffer("mask", torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1), persistent=False)

    def forward(self, x):  # (B, T, D)
        t = x.shape[1]
        return super().forward(x, x, x, attn_mask=self.mask[:t, :t], need_weights=False)[0]


def make_layer(spec):
    kind = spec["type"]
    if kind == "linear":
        return torch.nn.Linear(spec["in"], spec["out"])
    if kind == "gelu":
        return torch.nn.GELU()
    if kind == "relu":
        return torch.nn.ReLU()
    if kind == "embedding":
        return torch.nn.Embedding(spec["vocab"], spec["dim"])
    if kind == "positional":
        return PositionalEmbedding(spec["seq"], spec["dim"])
    if kind == "layer_norm":
        return torch.nn.LayerNorm(spec["dim"])
    if kind == "attention":
        return CausalSelfAttention(spec["dim"], spec["heads"], spec["seq"])
    if kind == "residual":
        return Residual(*[make_layer(l) for l in spec["layers"]])
    raise SystemExit(f"unknown layer type {kind}")


def load(module, given):
    params = dict(module.named_parameters())
    if set(params) != set(given):
        raise SystemExit(f"parameter names differ: torch {sorted(params)}, tandem {sorted(given)}")
    with torch.no_grad():
        for name, p in params.items():
            if list(p.shape) != given[name]["shape"]:
                raise SystemExit(f"{name}: torch shape {list(p.shape)}, tandem {given[name]['shape']}")
            p.copy_(torch.tensor(given[name]["values"], dtype=torch.float64).reshape(p.shape))
    return params


def run_layer(case, out):
    module = make_layer(case["layer"]).double()
    params = load(module, case["parameters"])
    samples, seq, width_in, width_out = case["samples"], case["seq"], case["in"], case["out"]
    tokens = case["layer"]["type"] == "embedding"
    if tokens:
        x = torch.tensor(case["x"], dtype=torch.long).reshape(samples, seq)
    else:
        x = torch.tensor(case["x"], dtype=torch.float64).reshape(samples, seq, width_in).requires_grad_()
    y = module(x)
    dy = torch.tensor(case["dy"], dtype=torch.float64).reshape(y.shape)
    y.backward(dy)
    out["output"] = y.detach().flatten().tolist()
    if not tokens:
        out["grad.input"] = x.grad.flatten().tolist()
    for name, p in params.items():
        out[f"grad.{name}"] = p.grad.flatten().tolist()


def run_gpt(case, out):
    model = make_model(case["stages"]).double()
    params = load(model, case["parameters"])
    o = case["optimizer"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                  weight_decay=o["weight_decay"])
    seq = case["seq"]
    criterion = torch.nn.CrossEntropyLoss()
    for k, step in enumerate(case["steps"]):
        x = torch.tensor(step["x"], dtype=torch.long).reshape(-1, seq)
        y = torch.tensor(step["y"], dtype=torch.long)
        optimizer.zero_grad()
        logits = model(x)
        loss = criterion(logits.reshape(y.shape[0], -1), y)
        loss.backward()
        optimizer.step()
        out[f"loss.{k}"] = [loss.item()]
    with torch.no_grad():
        out["output"] = model(torch.tensor(case["eval_x"], dtype=torch.long).reshape(-1, seq)).flatten().tolist()
    for name, p in params.items():
        out[f"param.{name}"] = p.detach().flatten().tolist()
        out[f"grad.{name}"] = p.grad.flatten().tolist()


def run_init(case, out):
    """PyTorch's own initialisation of the module tree, saved for tandem to load; its logits."""
    from safetensors.torch import save_file
    model = make_model(case["stages"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, case["file"])
    with torch.no_grad():
        out["output"] = model(torch.tensor(case["x"], dtype=torch.long).reshape(-1, case["seq"])).flatten().tolist()


def make_model(stages):
    model = torch.nn.Sequential()
    for i, stage in enumerate(stages):
        model.add_module(f"stage{i}", torch.nn.Sequential(*[make_layer(l) for l in stage]))
    return model


def main(input_path, output_path):
    with open(input_path) as f:
        case = json.load(f)
    torch.manual_seed(0)
    out = {}
    {"layer": run_layer, "gpt": run_gpt, "init": run_init}[case["kind"]](case, out)
    with open(output_path, "w") as f:
        for name, values in out.items():
            f.write(f"{name} {len(values)} " + " ".join(repr(float(v)) for v in values) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
