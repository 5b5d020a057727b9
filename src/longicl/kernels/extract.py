"""Kept so that ``from longicl.kernels.extract import …`` keeps working: code extraction is
`longicl.code_extract`, next to the other answer readers (`longicl.parse` reads code answers with it)."""

from longicl.code_extract import extract_code, fenced_blocks, parse_module, score_block, strip_thinking

__all__ = ["extract_code", "fenced_blocks", "parse_module", "score_block", "strip_thinking"]
