"""Supervised text models over a closed label set, trained on the demonstration pool only.

- `TfidfClassifier` (``tfidf``): word and character n-gram TF-IDF with a linear classifier; the
  general model for a closed label set (task 5's tweets).
- `TokenCountRegressor` (``token_count``): task 2's "count the nouns / verbs". A sentence's count
  is modelled as a sum of per-token scores, one set of scores per question word: each token
  contributes sparse features (the word, its suffixes, its neighbours, capitalisation), summed
  over the sentence, and ridge regression on the sums learns what every token adds, a
  part-of-speech tagger learnt from sentence totals alone. The rounded sum picks the label.
- `PairGenreClassifier` (``pair_genre``): task 6's "do both sentences belong to the genre". Same-
  genre pairs are MNLI premise/hypothesis pairs and the others are sentences from unrelated
  pairs, so how much the two sentences share (word and character TF-IDF cosine, overlap of rare
  words, lengths) decides most of it; per-sentence genre probabilities from a naive Bayes genre
  model trained on the sentences of same-genre pool examples add a little.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import Pipeline, make_pipeline, make_union
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from longicl.classical.base import ClassicalModel, NotFittedError, Prediction, labelled
from longicl.data import Example
from longicl.tasks import TaskSpec

CLASSIFIERS = ("logreg", "linear_svc", "sgd")


def _pair(value: Any, name: str) -> tuple[int, int]:
    """An n-gram range from config (a list or tuple of two ints); ``(0, 0)`` turns it off."""
    try:
        low, high = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be two integers, e.g. [1, 2]") from None
    if (low, high) != (0, 0) and not 1 <= low <= high:
        raise ValueError(f"{name}={value!r} must satisfy 1 <= low <= high (or [0, 0] to turn it off)")
    return low, high


def _linear_classifier(name: str, c: float, seed: int):
    if name == "logreg":
        return LogisticRegression(C=c, max_iter=3000)
    if name == "linear_svc":
        return LinearSVC(C=c)
    if name == "sgd":
        return SGDClassifier(loss="modified_huber", alpha=1.0 / (c * 10_000), random_state=seed)
    raise ValueError(f"classifier={name!r} is not one of: {', '.join(CLASSIFIERS)}")


class _Constant:
    """Stands in for a classifier when the pool has a single label."""

    def __init__(self, label: str) -> None:
        self.label = label

    def predict(self, texts: Sequence[Any]) -> list[str]:
        return [self.label] * len(texts)


# ------------------------------------------------------------------------------------------------
# tfidf
# ------------------------------------------------------------------------------------------------
@dataclass
class TfidfClassifier(ClassicalModel):
    """Word + character n-gram TF-IDF features and a linear classifier."""

    kind: ClassVar[str] = "tfidf"
    method: ClassVar[str] = "classifier"

    word_ngrams: tuple[int, int] = (1, 1)
    char_ngrams: tuple[int, int] = (2, 5)  # within word boundaries (char_wb)
    min_df: int = 2  # of character n-grams
    classifier: str = "logreg"  # logreg | linear_svc | sgd
    C: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.word_ngrams = _pair(self.word_ngrams, "word_ngrams")
        self.char_ngrams = _pair(self.char_ngrams, "char_ngrams")
        if self.word_ngrams == (0, 0) and self.char_ngrams == (0, 0):
            raise ValueError("word_ngrams and char_ngrams are both off: the model would see nothing")
        _linear_classifier(self.classifier, self.C, self.seed)  # validates the name early

    def _vectorizer(self):
        parts = []
        if self.word_ngrams != (0, 0):
            parts.append(
                TfidfVectorizer(
                    ngram_range=self.word_ngrams, sublinear_tf=True, token_pattern=r"(?u)[\w#@']+|[^\w\s]"
                )
            )
        if self.char_ngrams != (0, 0):
            parts.append(
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=self.char_ngrams, sublinear_tf=True, min_df=self.min_df
                )
            )
        return parts[0] if len(parts) == 1 else make_union(*parts)

    def fit(self, spec: TaskSpec, pool: Sequence[Example]) -> TfidfClassifier:
        examples = labelled(pool)
        if not examples:
            raise ValueError(f"{spec.name}: no labelled examples to learn from")
        texts = [ex.input for ex in examples]
        labels = [ex.output or "" for ex in examples]
        if len(set(labels)) < 2:
            self._model: Pipeline | _Constant = _Constant(labels[0])
            return self
        vectorizer = self._vectorizer()
        if len(texts) < self.min_df and self.char_ngrams != (0, 0):  # tiny pools: keep every n-gram
            vectorizer.set_params(**_min_df_params(vectorizer, 1))
        self._model = make_pipeline(vectorizer, _linear_classifier(self.classifier, self.C, self.seed))
        self._model.fit(texts, labels)
        return self

    def predict(self, text: str) -> Prediction:
        model = getattr(self, "_model", None)
        if model is None:
            raise NotFittedError("TfidfClassifier.predict before fit")
        return Prediction(str(model.predict([text])[0]), self.method)


def _min_df_params(vectorizer, value: int) -> dict[str, int]:
    if isinstance(vectorizer, TfidfVectorizer):
        return {"min_df": value}
    return {f"{name}__min_df": value for name, _ in vectorizer.transformer_list}


# ------------------------------------------------------------------------------------------------
# token_count (task 2)
# ------------------------------------------------------------------------------------------------
_COUNT_INPUT = re.compile(r"^\s*Sentence:\s*'(?P<sentence>.*)'\s*\.\s*(?P<question>.*?)\s*$", re.S)
_COUNTED = re.compile(r"number of (\w+)", re.I)
_TOKEN = re.compile(r"[A-Za-z0-9']+|[^\sA-Za-z0-9]")


def split_count_query(text: str) -> tuple[str, str]:
    """``"Sentence: '…'. Count the number of nouns in this sentence."`` -> (sentence, ``"nouns"``).

    The question is reduced to the counted word; an input of another shape is all sentence, with
    question ``""``.
    """
    match = _COUNT_INPUT.match(text)
    if not match:
        return text.strip(), ""
    question = match.group("question")
    counted = _COUNTED.search(question)
    key = counted.group(1).lower() if counted else re.sub(r"\s+", " ", question.lower())
    return match.group("sentence"), key


def token_features(sentence: str, question: str) -> dict[str, float]:
    """Per-token features summed over the sentence, each prefixed by the question word."""
    words = _TOKEN.findall(sentence)
    lowered = [w.lower() for w in words]
    counts: dict[str, float] = {}
    for i, word in enumerate(words):
        low = lowered[i]
        before = lowered[i - 1] if i else "<s>"
        after = lowered[i + 1] if i + 1 < len(words) else "</s>"
        for feature in (
            "bias",
            "w=" + low,
            "s2=" + low[-2:],
            "s3=" + low[-3:],
            "p=" + before,
            "n=" + after,
            "pw=" + before + "_" + low,
            f"len={min(len(low), 8)}",
            f"cap={int(word[:1].isupper())}",
        ):
            key = question + "|" + feature
            counts[key] = counts.get(key, 0.0) + 1.0
    return counts


@dataclass
class TokenCountRegressor(ClassicalModel):
    """Ridge regression of a count on per-token features summed over the sentence."""

    kind: ClassVar[str] = "token_count"
    method: ClassVar[str] = "classifier"

    alpha: float = 1.0

    def fit(self, spec: TaskSpec, pool: Sequence[Example]) -> TokenCountRegressor:
        examples = labelled(pool)
        rows, targets = [], []
        for ex in examples:
            try:
                target = float(ex.output or "")
            except ValueError:
                continue  # not a count: cannot be regressed on
            rows.append(token_features(*split_count_query(ex.input)))
            targets.append(target)
        if not rows:
            raise ValueError(f"{spec.name}: no examples with a numeric answer to learn counts from")
        self._vectorizer = DictVectorizer()
        matrix = self._vectorizer.fit_transform(rows)
        self._ridge = Ridge(alpha=self.alpha).fit(matrix, np.asarray(targets))
        numeric = [(float(label), label) for label in (spec.labels or ()) if _is_number(label)]
        self._labels = numeric or None
        return self

    def estimate(self, text: str) -> float:
        """The unrounded count."""
        ridge = getattr(self, "_ridge", None)
        if ridge is None:
            raise NotFittedError("TokenCountRegressor.predict before fit")
        matrix = self._vectorizer.transform([token_features(*split_count_query(text))])
        return float(ridge.predict(matrix)[0])

    def predict(self, text: str) -> Prediction:
        value = self.estimate(text)
        if self._labels:
            answer = min(self._labels, key=lambda pair: (abs(pair[0] - value), pair[0]))[1]
        else:
            answer = str(max(0, int(math.floor(value + 0.5))))
        return Prediction(answer, self.method)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# pair_genre (task 6)
# ------------------------------------------------------------------------------------------------
_PAIR_INPUT = re.compile(
    r"^\s*Sentence 1:\s*(?P<a>.*?)\s*Sentence 2:\s*(?P<b>.*?)\s*Genre:\s*(?P<genre>.*?)\s*\.?\s*$", re.S
)
_WORD = re.compile(r"[a-z0-9']+")
_RARE_IDF = 3.0  # a shared word with at least this idf counts as a content word


def split_pair(text: str) -> tuple[str, str, str]:
    """``"Sentence 1: … Sentence 2: … Genre: travel."`` -> (sentence 1, sentence 2, ``"travel"``)."""
    match = _PAIR_INPUT.match(text)
    if not match:
        return text.strip(), "", ""
    return match.group("a"), match.group("b"), match.group("genre").strip().lower()


@dataclass
class PairGenreClassifier(ClassicalModel):
    """Logistic regression on pair-similarity features and per-sentence genre probabilities."""

    kind: ClassVar[str] = "pair_genre"
    method: ClassVar[str] = "classifier"

    C: float = 1.0
    genre_features: bool = True
    genre_alpha: float = 0.3  # smoothing of the ComplementNB genre model
    same_label: str = "Y"  # the label of pairs whose sentences are both of the named genre
    folds: int = 5  # out-of-fold genre probabilities for the genre model's own training pairs
    seed: int = 0

    def fit(self, spec: TaskSpec, pool: Sequence[Example]) -> PairGenreClassifier:
        examples = labelled(pool)
        if not examples:
            raise ValueError(f"{spec.name}: no labelled examples to learn from")
        rows = [split_pair(ex.input) for ex in examples]
        labels = [ex.output or "" for ex in examples]
        sentences = [s for a, b, _ in rows for s in (a, b) if s]
        self._word = TfidfVectorizer(token_pattern=r"[a-z0-9']+", sublinear_tf=True).fit(
            sentences or ["empty"]
        )
        self._char = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(3, 4), sublinear_tf=True, min_df=2 if len(sentences) > 100 else 1
        ).fit(sentences or ["empty"])
        self._idf = dict(zip(self._word.get_feature_names_out(), self._word.idf_.tolist(), strict=True))
        self._unknown_idf = float(self._word.idf_.max()) if len(self._word.idf_) else 1.0
        self._genre: Pipeline | None = None
        features = self._similarity(rows)
        if self.genre_features:
            genre = self._genre_probabilities(rows, labels)
            if genre is not None:
                features = np.hstack([features, genre])
        if len(set(labels)) < 2:
            self._model: Pipeline | _Constant = _Constant(labels[0])
        else:
            self._model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=3000))
            self._model.fit(features, labels)
        return self

    def predict(self, text: str) -> Prediction:
        model = getattr(self, "_model", None)
        if model is None:
            raise NotFittedError("PairGenreClassifier.predict before fit")
        rows = [split_pair(text)]
        features = self._similarity(rows)
        if self._genre is not None:
            features = np.hstack(
                [features, self._genre_features(rows, *self._genre_proba(self._genre, rows))]
            )
        return Prediction(str(model.predict(features)[0]), self.method)

    # -- features ---------------------------------------------------------------------------------
    def _similarity(self, rows: Sequence[tuple[str, str, str]]) -> np.ndarray:
        firsts = [a for a, _, _ in rows]
        seconds = [b for _, b, _ in rows]
        word_cos = _row_dot(self._word.transform(firsts), self._word.transform(seconds))
        char_cos = _row_dot(self._char.transform(firsts), self._char.transform(seconds))
        out = []
        for (a, b, _), wcos, ccos in zip(rows, word_cos, char_cos, strict=True):
            wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
            shared = wa & wb
            weight = sum(self._idf.get(w, self._unknown_idf) for w in shared)
            mass_b = sum(self._idf.get(w, self._unknown_idf) for w in wb)
            out.append(
                [
                    wcos,
                    ccos,
                    len(shared) / max(1, len(wa | wb)),
                    len(shared),
                    sum(1 for w in shared if self._idf.get(w, self._unknown_idf) > _RARE_IDF),
                    weight,
                    weight / max(1.0, mass_b),
                    len(shared) / max(1, len(wb)),
                    len(shared) / max(1, len(wa)),
                    math.log1p(len(wa)),
                    math.log1p(len(wb)),
                    math.log1p(len(wa)) - math.log1p(len(wb)),
                ]
            )
        return np.asarray(out, dtype=np.float64)

    def _genre_model(self) -> Pipeline:
        return make_pipeline(
            TfidfVectorizer(
                token_pattern=r"(?u)\b\w+\b|[^\w\s]", ngram_range=(1, 2), sublinear_tf=True, lowercase=False
            ),
            ComplementNB(alpha=self.genre_alpha),
        )

    def _genre_probabilities(self, rows: list[tuple[str, str, str]], labels: list[str]) -> np.ndarray | None:
        """Genre features of the training pairs (out of fold where the genre model saw them), or
        None when the pool cannot train a genre model (then the model goes without them)."""
        same = np.array([i for i, label in enumerate(labels) if label == self.same_label and rows[i][2]])
        genres = [rows[i][2] for i in same]
        if len(set(genres)) < 2 or len(same) < 2 * self.folds:
            return None

        def train(indices: np.ndarray) -> Pipeline:
            texts = [s for i in indices for s in rows[i][:2]]
            return self._genre_model().fit(texts, [rows[i][2] for i in indices for _ in (0, 1)])

        model = train(same)
        first, second = self._genre_proba(model, rows)
        smallest = min(genres.count(g) for g in set(genres))
        splitter = (
            StratifiedKFold(self.folds, shuffle=True, random_state=self.seed)
            if smallest >= self.folds
            else KFold(self.folds, shuffle=True, random_state=self.seed)
        )
        for train_at, test_at in splitter.split(same, genres):
            fold = train(same[train_at])
            held = [rows[i] for i in same[test_at]]
            fa, fb = self._genre_proba(fold, held, classes=model.classes_)
            first[same[test_at]], second[same[test_at]] = fa, fb
        self._genre = model
        return self._genre_features(rows, first, second)

    @staticmethod
    def _genre_proba(
        model: Pipeline, rows: Sequence[tuple[str, str, str]], classes: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Genre probabilities of each pair's two sentences, columns in ``classes`` order."""
        first = model.predict_proba([a for a, _, _ in rows])
        second = model.predict_proba([b for _, b, _ in rows])
        if classes is not None and list(model.classes_) != list(classes):
            where = {g: i for i, g in enumerate(model.classes_)}
            pick = [where.get(g) for g in classes]

            def align(p: np.ndarray) -> np.ndarray:
                return np.column_stack([p[:, j] if j is not None else np.zeros(len(p)) for j in pick])

            first, second = align(first), align(second)
        return first, second

    def _genre_features(
        self, rows: Sequence[tuple[str, str, str]], first: np.ndarray, second: np.ndarray
    ) -> np.ndarray:
        classes = list(self._genre.classes_) if self._genre is not None else []
        where = {g: i for i, g in enumerate(classes)}
        named = np.array([where.get(g, -1) for _, _, g in rows])
        known = named >= 0
        at = np.arange(len(rows))
        pa = np.where(known, first[at, np.maximum(named, 0)], 0.0)
        pb = np.where(known, second[at, np.maximum(named, 0)], 0.0)
        return np.column_stack(
            [
                pa,
                pb,
                pa * pb,
                np.minimum(pa, pb),
                (first * second).sum(axis=1),
                (first.argmax(axis=1) == second.argmax(axis=1)).astype(np.float64),
            ]
        )


def _row_dot(left, right) -> np.ndarray:
    return np.asarray(left.multiply(right).sum(axis=1)).ravel()
