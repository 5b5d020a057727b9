"""Wrong maths: normalises over the wrong axis (always dim 0)."""

import torch
import triton
import triton.language as tl


@triton.jit
def _exp_kernel(in_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.exp(tl.load(in_ptr + offs, mask=mask)), mask=mask)


def softmax(input, dim, dtype=None):
    x = input.contiguous()
    e = torch.empty_like(x)
    n = x.numel()
    _exp_kernel[(triton.cdiv(n, 64),)](x, e, n, BLOCK=64)
    return e / e.sum(dim=0, keepdim=True)
