# SPDX-License-Identifier: Apache-2.0
"""The PyTorch side of tandem's checkpoint reference tests (see checkpoint_reference.cpp).

The module is built from the network signature that tandem writes into __metadata__
("Stage<Device<0>, Linear<6, 12>, Tanh> 6 -> 12 | Stage<Device<1>, Sigmoid> 12 -> 12 | ..."): one
attribute stage0, stage1, ... per stage, each an nn.Sequential of the stage's layers, so that the
weights load with load_state_dict(strict=True) under tandem's names.

usage: checkpoint_reference.py to_torch DIR      weights.safetensors (tandem's) and data.safetensors
                                                 (x, tandem's output y): PyTorch's output must agree
       checkpoint_reference.py from_torch DIR SIGNATURE
                                                 writes torch.safetensors (a module's state_dict) and
                                                 torch_data.safetensors (x and the module's output)
       checkpoint_reference.py digits DIR        model.safetensors and digits_test.safetensors of
                                                 example 04_digits: every prediction must agree
Exit status 77 when the safetensors package is missing (unless TANDEM_REQUIRE_SAFETENSORS=1: CI).
"""
import os
import re
import sys

import torch

try:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
except ImportError:
    required = os.environ.get("TANDEM_REQUIRE_SAFETENSORS", "0") not in ("", "0", "OFF", "FALSE")
    print("%s: the safetensors package is missing: /usr/bin/python3 -m pip install --break-system-packages "
          "safetensors (scripts/setup.sh does)" % ("FAILED" if required else "SKIPPED"))
    sys.exit(1 if required else 77)

TOLERANCE = 1e-5  # float32, as tandem's other reference tests on the host

ACTIVATIONS = {
    "Identity": torch.nn.Identity,
    "ReLU": torch.nn.ReLU,
    "Sigmoid": torch.nn.Sigmoid,
    "Tanh": torch.nn.Tanh,
    "GELU": torch.nn.GELU,
    "GELUTanh": lambda: torch.nn.GELU(approximate="tanh"),
}


class Pipeline(torch.nn.Module):
    """tandem's Pipeline as PyTorch modules: attribute stageI is stage I's nn.Sequential."""

    def __init__(self, signature):
        super().__init__()
        stages = signature.split(";")[0].split(" | ")
        self.count = len(stages)
        for i, stage in enumerate(stages):
            layers = []
            for linear_in, linear_out, activation in re.findall(r"Linear<(\d+), (\d+)>|(\b[A-Za-z]+\b)(?=[,>])",
                                                                 stage.split(">", 1)[1]):
                if linear_in:
                    layers.append(torch.nn.Linear(int(linear_in), int(linear_out)))
                else:
                    layers.append(ACTIVATIONS[activation]())
            setattr(self, "stage%d" % i, torch.nn.Sequential(*layers))

    def forward(self, x):
        for i in range(self.count):
            x = getattr(self, "stage%d" % i)(x)
        return x


def metadata(path):
    with safe_open(path, "pt") as f:
        return f.metadata() or {}


def relative_error(got, want):
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp(min=1e-30)).item()


def to_torch(folder):
    weights = os.path.join(folder, "weights.safetensors")
    module = Pipeline(metadata(weights)["tandem.network"])
    module.load_state_dict(load_file(weights), strict=True)
    data = load_file(os.path.join(folder, "data.safetensors"))
    with torch.no_grad():
        error = relative_error(module(data["x"]), data["y"])
    print("PyTorch loaded tandem's weights (strict): output relative error %.3e (tolerance %.0e)" % (error, TOLERANCE))
    return 0 if error <= TOLERANCE else 1


def from_torch(folder, signature):
    torch.manual_seed(1234)
    module = Pipeline(signature)
    x = torch.rand(16, module.stage0[0].in_features) * 4 - 2
    with torch.no_grad():
        y = module(x)
    save_file(module.state_dict(), os.path.join(folder, "torch.safetensors"), metadata={"format": "pt"})
    save_file({"x": x, "y": y}, os.path.join(folder, "torch_data.safetensors"))
    print("PyTorch saved %d tensors of %s" % (len(module.state_dict()), signature))
    return 0


def digits(folder):
    model = os.path.join(folder, "model.safetensors")
    module = Pipeline(metadata(model)["tandem.network"])
    module.load_state_dict(load_file(model), strict=True)
    test = load_file(os.path.join(folder, "digits_test.safetensors"))
    with torch.no_grad():
        logits = module(test["x"])
    prediction = logits.argmax(dim=1).to(torch.int32)
    agree = int((prediction == test["prediction"]).sum())
    n = len(prediction)
    error = relative_error(logits, test["logits"])
    accuracy = 100.0 * float((prediction == test["label"]).sum()) / n
    print("PyTorch on tandem's digits checkpoint: test accuracy %.1f %%, %d of %d predictions as tandem's, "
          "logits relative error %.3e (tolerance %.0e)" % (accuracy, agree, n, error, TOLERANCE))
    return 0 if agree == n and error <= TOLERANCE else 1


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "to_torch":
        sys.exit(to_torch(sys.argv[2]))
    if mode == "from_torch":
        sys.exit(from_torch(sys.argv[2], sys.argv[3]))
    if mode == "digits":
        sys.exit(digits(sys.argv[2]))
    sys.exit("unknown mode " + mode)
