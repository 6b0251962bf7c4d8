# SPDX-License-Identifier: Apache-2.0
"""The PyTorch side of tandem's reference tests (see reference_test.cpp).

Reads the case tandem wrote (network layout, initial weights by name, optimizer, loss, the
batches of every step, an evaluation input), builds the same network with torch.nn, trains it
with torch.optim, and writes one tensor per line: `name count v1 v2 ...`:
  loss.K         the loss of step K (before its optimizer step, as train_step returns it)
  output         the trained network's output on the evaluation input
  param.NAME     every parameter after the last step
  grad.NAME      every parameter's gradient of the last step
A case with "precision": "bf16" runs its forward passes under torch.autocast (CPU, bfloat16).

usage: torch_reference.py input.json output.txt
"""
import contextlib
import json
import sys

import torch


def make_layer(spec):
    kind = spec["type"]
    if kind == "linear":
        return torch.nn.Linear(spec["in"], spec["out"])
    return {
        "identity": torch.nn.Identity,
        "relu": torch.nn.ReLU,
        "sigmoid": torch.nn.Sigmoid,
        "tanh": torch.nn.Tanh,
        "gelu": torch.nn.GELU,
        "gelu_tanh": lambda: torch.nn.GELU(approximate="tanh"),
    }[kind]()


def make_optimizer(spec, params):
    kind = spec["type"]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=spec["lr"], momentum=spec["momentum"], dampening=spec["dampening"],
                               weight_decay=spec["weight_decay"], nesterov=spec["nesterov"])
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    return cls(params, lr=spec["lr"], betas=tuple(spec["betas"]), eps=spec["eps"],
               weight_decay=spec["weight_decay"], amsgrad=spec["amsgrad"])


def autocast(case):
    """The case's precision: "bf16" runs the forward under CPU autocast with bfloat16, whose
    Linear products read bfloat16 inputs and accumulate in float32 (tandem's Precision::bf16);
    anything else, plain float32."""
    if case.get("precision", "fp32") == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def main(input_path, output_path):
    with open(input_path) as f:
        case = json.load(f)
    torch.set_default_dtype(torch.float32)
    in_features, out_features = case["in_features"], case["out_features"]

    # nn.Sequential of one nn.Sequential per stage: parameter names come out as tandem's,
    # "stage1.2.weight" being layer 2 of stage 1.
    model = torch.nn.Sequential()
    for i, stage in enumerate(case["stages"]):
        model.add_module(f"stage{i}", torch.nn.Sequential(*[make_layer(l) for l in stage]))

    params = dict(model.named_parameters())
    given = case["parameters"]
    if set(params) != set(given):
        raise SystemExit(f"parameter names differ: torch {sorted(params)}, tandem {sorted(given)}")
    with torch.no_grad():
        for name, p in params.items():
            value = torch.tensor(given[name]["values"], dtype=torch.float32).reshape(p.shape)
            if list(p.shape) != [d for d in given[name]["shape"]]:
                raise SystemExit(f"{name}: torch shape {list(p.shape)}, tandem {given[name]['shape']}")
            p.copy_(value)

    optimizer = make_optimizer(case["optimizer"], model.parameters())
    if case["loss"] == "cross_entropy":
        criterion = torch.nn.CrossEntropyLoss()
    else:
        criterion = torch.nn.MSELoss()

    out = {}
    for k, step in enumerate(case["steps"]):
        x = torch.tensor(step["x"], dtype=torch.float32).reshape(-1, in_features)
        if case["loss"] == "cross_entropy":
            y = torch.tensor(step["y"], dtype=torch.long)
        else:
            y = torch.tensor(step["y"], dtype=torch.float32).reshape(-1, out_features)
        optimizer.zero_grad()
        with autocast(case):
            output = model(x)
        loss = criterion(output.float(), y)  # the loss in float32, as autocast computes it
        loss.backward()
        optimizer.step()
        out[f"loss.{k}"] = [loss.item()]

    with torch.no_grad(), autocast(case):
        eval_x = torch.tensor(case["eval_x"], dtype=torch.float32).reshape(-1, in_features)
        out["output"] = model(eval_x).float().flatten().tolist()
    for name, p in params.items():
        out[f"param.{name}"] = p.detach().flatten().tolist()
        out[f"grad.{name}"] = p.grad.flatten().tolist()

    with open(output_path, "w") as f:
        for name, values in out.items():
            f.write(f"{name} {len(values)} " + " ".join(repr(float(v)) for v in values) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
