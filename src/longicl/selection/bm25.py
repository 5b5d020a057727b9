"""``bm25``: per-sample nearest neighbours of the query by Okapi BM25 (OpenCompass: BM25Retriever).

The index is a sparse document-term matrix of BM25 weights, so scoring a query is one sparse
matrix-vector product over the pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

from longicl.data import Example
from longicl.selection.base import PromptBudget, Selector


class BM25Index:
    """Okapi BM25 over a list of texts (word tokens, lower-cased)."""

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.vectorizer = CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float32)
        try:
            tf = sparse.csr_matrix(self.vectorizer.fit_transform(texts), dtype=np.float32)
        except ValueError:  # every text empty: nothing to match on
            self.vectorizer = None
            self.weights = None
            self.size = len(texts)
            return
        n_docs = tf.shape[0]
        doc_len = np.asarray(tf.sum(axis=1)).ravel()
        avg_len = float(doc_len.mean()) or 1.0
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        rows = np.repeat(np.arange(n_docs), np.diff(tf.indptr))
        norm = k1 * (1 - b + b * doc_len[rows] / avg_len)
        data = idf[tf.indices] * tf.data * (k1 + 1) / (tf.data + norm)
        self.weights = sparse.csr_matrix((data, tf.indices, tf.indptr), shape=tf.shape)
        self.size = n_docs

    def scores(self, query: str) -> np.ndarray:
        if self.weights is None or self.vectorizer is None:
            return np.zeros(self.size, dtype=np.float32)
        q = self.vectorizer.transform([query])
        q.data[:] = 1.0  # each query term counts once
        return np.asarray((self.weights @ q.T).todense()).ravel()

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
