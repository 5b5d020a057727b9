"""Correct: elementwise true division in Triton, with broadcasting and rounding modes."""

import torch
import triton
import triton.language as tl


@triton.jit
def _div_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(axis=0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    y = tl.load(y_ptr + offsets, mask=mask, other=1.0)
    tl.store(out_ptr + offsets, x / y, mask=mask)


def div(input, other, *, rounding_mode=None, out=None):
    if not isinstance(other, torch.Tensor):
        other = torch.tensor(other, device=input.device)
    x, y = torch.broadcast_tensors(input, other)
    dtype = torch.promote_types(x.dtype, y.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    x = x.to(dtype).contiguous()
    y = y.to(dtype).contiguous()
    result = torch.empty_like(x)
    n = x.numel()
    grid = (triton.cdiv(n, 128),)
    _div_kernel[grid](x, y, result, n, BLOCK_SIZE=128)
    if rounding_mode == "trunc":
        result = torch.trunc(result)
    elif rounding_mode == "floor":
        result = torch.floor(result)
    if out is not None:
        out.copy_(result)
        return out
    return result
