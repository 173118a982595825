"""Bag-of-words features: a vocabulary of words, word runs and character n-grams, encoded as sparse index bags."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch

PAD = "<pad>"
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; punctuation and casing carry no intent."""
    return _TOKEN.findall(text.casefold())


# Character n-grams are marked so that none can equal a word: "#<ca", "#cab>".
CHAR_PREFIX = "#"
SHORTEST_CHAR_NGRAM = 2


def features_of(text: str, word_ngrams: int, char_ngrams: int = 0) -> list[str]:
    """Distinct words, runs of up to ``word_ngrams`` words, and (``char_ngrams`` > 0) the character n-grams of
    2 to ``char_ngrams`` characters inside each word marked ``<word>``, as fastText makes them; first-seen order.

    Character n-grams let a misspelt or inflected word ("parcels", "pakage") share features with a known one.
    """
    words = tokenize(text)
    found: dict[str, None] = {}
    for size in range(1, word_ngrams + 1):
        for start in range(len(words) - size + 1):
            found[" ".join(words[start:start + size])] = None
    for word in words if char_ngrams else ():
        marked = f"<{word}>"
        for size in range(SHORTEST_CHAR_NGRAM, min(char_ngrams, len(marked)) + 1):
            for start in range(len(marked) - size + 1):
                found[CHAR_PREFIX + marked[start:start + size]] = None
    return list(found)


class Vocabulary(Mapping[str, int]):
    """Feature -> column. Index 0 is padding, so an unknown-only sentence encodes to an empty bag."""

    def __init__(self, features: Iterable[str], word_ngrams: int = 2, char_ngrams: int = 0):
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self._features = [PAD, *features]
        self._index = {feature: index for index, feature in enumerate(self._features)}

    def __getitem__(self, feature: str) -> int:
        return self._index[feature]

    def __iter__(self) -> Iterator[str]:
        return iter(self._features)

    def __len__(self) -> int:
        return len(self._features)

    @property
    def features(self) -> list[str]:
        """Features in column order, padding excluded."""
        return self._features[1:]

    def bag(self, text: str) -> list[int]:
        """Column indices of the known features of ``text``, each once."""
        get = self._index.get
        if self.word_ngrams == 1 and not self.char_ngrams:  # the common case, without building n-grams
            found = map(get, dict.fromkeys(_TOKEN.findall(text.casefold())))
        else:
            found = map(get, features_of(text, self.word_ngrams, self.char_ngrams))
        return [column for column in found if column is not None]

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Index bags ``[rows, width]`` and their weights; each row's weights have unit L2 norm.

        Binary presence normalised by length keeps short and long sentences on one scale.
        """
        if len(texts) == 1:  # one sentence (interactive predict): skip the batch scatter's fixed cost
            bag = self.bag(texts[0]) or [0]
            return (torch.tensor([bag], dtype=torch.long),
                    torch.full((1, len(bag)), 1.0 / len(bag) ** 0.5 if bag != [0] else 0.0))
        indices, weights, lengths = self.encode_flat(texts)
        width = int(lengths.max()) if len(lengths) else 0
        padded = torch.zeros((len(texts), width or 1), dtype=torch.long)
        padded_weights = torch.zeros((len(texts), width or 1), dtype=torch.float32)
        # One scatter for the whole batch instead of a small tensor per row.
        rows = torch.repeat_interleave(torch.arange(len(texts)), lengths)
        columns = torch.arange(len(indices)) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        padded[rows, columns] = indices
        padded_weights[rows, columns] = weights
        return padded, padded_weights

    def encode_flat(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The bags of ``encode`` laid end to end without padding: indices, weights, and each sentence's length."""
        bags = [self.bag(text) for text in texts]
        lengths = np.fromiter((len(bag) for bag in bags), dtype=np.int64, count=len(bags))
        indices = np.fromiter(itertools.chain.from_iterable(bags), dtype=np.int64, count=int(lengths.sum()))
        weights = np.repeat((1.0 / np.sqrt(np.maximum(lengths, 1))).astype(np.float32), lengths)
        return torch.from_numpy(indices), torch.from_numpy(weights), torch.from_numpy(lengths)


def build_vocabulary(texts: Iterable[str], word_ngrams: int = 2, min_count: int = 1,
                     char_ngrams: int = 0, pair_texts: Iterable[str] | None = None) -> Vocabulary:
    """Every feature seen at least ``min_count`` times, most frequent first (ties alphabetical).

    ``pair_texts``: where runs of two or more words are taken from (None: ``texts``); single words and character
    n-grams always come from ``texts``.
    """
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(features_of(text, 1 if pair_texts is not None else word_ngrams, char_ngrams))
    for text in pair_texts if pair_texts is not None and word_ngrams > 1 else ():
        counts.update(feature for feature in features_of(text, word_ngrams) if " " in feature)
    kept = sorted((feature for feature, count in counts.items() if count >= min_count),
                  key=lambda feature: (-counts[feature], feature))
    return Vocabulary(kept, word_ngrams=word_ngrams, char_ngrams=char_ngrams)
