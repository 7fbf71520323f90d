"""Types of the compiled extension built from quantized_linear.cpp."""

import torch

has_vnni: bool

def int4_linear(x: torch.Tensor, nibbles: torch.Tensor, scales: torch.Tensor, bases: torch.Tensor) -> torch.Tensor: ...
