"""Types of the compiled extension built from quantized_linear.cpp."""

import torch

has_vnni: bool

def int4_linear(x: torch.Tensor, tiles: torch.Tensor, scales: torch.Tensor, bases: torch.Tensor) -> torch.Tensor: ...
def exact_logits(x: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor: ...
