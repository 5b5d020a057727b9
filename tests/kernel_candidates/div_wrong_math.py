"""Wrong maths: multiplies instead of dividing."""

import torch
import triton
import triton.language as tl


@triton.jit
def _div_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(axis=0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, x * y, mask=mask)


def div(input, other, *, rounding_mode=None, out=None):
    x, y = torch.broadcast_tensors(input, other)
    x, y = x.contiguous(), y.contiguous()
    result = torch.empty_like(x)
    n = x.numel()
    _div_kernel[(triton.cdiv(n, 64),)](x, y, result, n, BLOCK_SIZE=64)
    return result
