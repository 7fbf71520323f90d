"""Types of the compiled extension built from quantized_linear.cpp."""

import torch

has_vnni: bool

def int4_linear(x: torch.Tensor, tiles: torch.Tensor, scales: torch.Tensor, bases: torch.Tensor) -> torch.Tensor: ...
def rescored_logits(first_pass: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, count: int) -> torch.Tensor: ...
