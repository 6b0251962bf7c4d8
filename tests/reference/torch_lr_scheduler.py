# SPDX-License-Identifier: Apache-2.0
"""The PyTorch side of tandem's learning-rate schedule test (lr_scheduler_test.cpp).

Reads the cases tandem wrote (one JSON object per line: name, optimizer, base lr, steps and the
schedules with their arguments), runs each with torch.optim.lr_scheduler and writes one line per
case: `name lr0 lr1 ... lrN`, the optimizer's rate after construction and after each step, as
Python's repr of the double (17 significant digits, exact).

usage: torch_lr_scheduler.py input.jsonl output.txt
"""
import json
import sys
import warnings

import torch
from torch.optim import lr_scheduler


def make_schedule(spec, opt):
    kind, args = spec["type"], spec["args"]
    return {
        "step": lr_scheduler.StepLR,
        "multistep": lr_scheduler.MultiStepLR,
        "exponential": lr_scheduler.ExponentialLR,
        "cosine": lr_scheduler.CosineAnnealingLR,
        "linear": lr_scheduler.LinearLR,
    }[kind](opt, **args)


def run(case):
    param = torch.nn.Parameter(torch.ones(3))
    if case["optimizer"] == "sgd":
        opt = torch.optim.SGD([param], lr=case["lr"])
    else:
        opt = torch.optim.Adam([param], lr=case["lr"])
    schedules = [make_schedule(s, opt) for s in case["schedules"]]
    if case["milestones"] is None:
        sched = schedules[0]
    else:
        sched = lr_scheduler.SequentialLR(opt, schedules, milestones=case["milestones"])
    rates = [opt.param_groups[0]["lr"]]
    for _ in range(case["steps"]):
        opt.step()  # no gradient: changes nothing, but keeps PyTorch's call order
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    return rates


def main(input_path, output_path):
    warnings.simplefilter("ignore")  # SequentialLR's inner step(0) warns that the epoch argument is deprecated
    with open(input_path) as f, open(output_path, "w") as out:
        for line in f:
            case = json.loads(line)
            out.write(case["name"] + " " + " ".join(repr(r) for r in run(case)) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
