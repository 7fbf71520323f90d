"""Types of the compiled extension built from quantized_linear.cpp."""

import torch

has_vnni: bool

def int4_linear(
    x: torch.Tensor,
    tiles: torch.Tensor,
    scales: torch.Tensor,
    bases: torch.Tensor,
    activation_bits: int = 16,
    fifth_bits: torch.Tensor | None = None,
) -> torch.Tensor: ...
def block_linear(
    x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, bases: torch.Tensor | None, block_size: int
) -> torch.Tensor: ...
def rescored_logits(first_pass: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, count: int) -> torch.Tensor: ...
