"""Correct: ReLU in Triton, written for a GPU (device checks) as models usually do."""

import torch
import triton
import triton.language as tl


@triton.jit
def relu_kernel(x_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, tl.where(x > 0, x, 0.0), mask=mask)


def relu(input, inplace=False):
    assert input.is_cuda, "input must be on the GPU"
    x = input.contiguous()
    out = x if inplace else torch.empty(x.shape, device="cuda", dtype=x.dtype)
    n = x.numel()
    relu_kernel[(triton.cdiv(n, 256),)](x, out, n, BLOCK_SIZE=256)
    if inplace and out.data_ptr() != input.data_ptr():
        input.copy_(out)
        return input
    return out
