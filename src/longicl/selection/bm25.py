"""``bm25``: per-sample nearest neighbours of the query by Okapi BM25 (OpenCompass: BM25Retriever).

The index is a sparse document-term matrix of BM25 weights, so scoring a query sums a few of its
columns: one pass over the postings of the query's terms.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from longicl.data import Example
from longicl.selection.base import PromptBudget, Selector

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class BM25Index:
    """Okapi BM25 over a list of texts (word tokens, lower-cased)."""

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.vocabulary: dict[str, int] = {}
        indptr, indices, counts = [0], [], []
        for text in texts:
            tally = Counter(self.vocabulary.setdefault(w, len(self.vocabulary)) for w in words(text))
            indices.extend(tally)
            counts.extend(tally.values())
            indptr.append(len(indices))
        self.size = len(texts)
        tf = sparse.csr_matrix(
            (np.asarray(counts, dtype=np.float32), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
            shape=(self.size, max(1, len(self.vocabulary))),
        )
        doc_len = np.asarray(tf.sum(axis=1)).ravel()
        avg_len = float(doc_len.mean()) if self.size and doc_len.mean() > 0 else 1.0
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        idf = np.log1p((self.size - df + 0.5) / (df + 0.5)).astype(np.float32)
        rows = np.repeat(np.arange(self.size), np.diff(tf.indptr))
        norm = k1 * (1 - b + b * doc_len[rows] / avg_len)
        data = idf[tf.indices] * tf.data * (k1 + 1) / (tf.data + norm)
        # Column-major, so that a query's few terms select a few columns.
        self.weights = sparse.csr_matrix((data, tf.indices, tf.indptr), shape=tf.shape).tocsc()

    def scores(self, query: str) -> np.ndarray:
        terms = sorted({self.vocabulary[w] for w in words(query) if w in self.vocabulary})
        if not terms:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.weights[:, terms].sum(axis=1)).ravel()

    def ranked(self, query: str) -> np.ndarray:
        """Pool indices, most similar first; ties broken by index for determinism."""
        scores = self.scores(query)
        return np.lexsort((np.arange(self.size), -scores))


class BM25Selector(Selector):
    name = "bm25"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.index = BM25Index([ex.input for ex in self.pool])

    def dynamic_demos(self, query: Example, budget: PromptBudget, exclude: frozenset[int]) -> list[int]:
        # The whole demonstration budget goes to neighbours; fill until the floor is safely met.
        ceiling = budget.static_tokens + budget.dynamic_tokens
        return self.fill_dynamic(self.index.ranked(query.input).tolist(), ceiling, exclude)
