"""Bag-of-words features: a vocabulary of words, word runs and character n-grams, encoded as sparse index bags."""

from __future__ import annotations

import itertools
import re
import string
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import torch

PAD = "<pad>"
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
# Batch encoding tokenises a whole chunk of sentences in one regex call, the sentences joined by a separator that
# the pattern returns as a token of its own (it is no word character, so no word can contain it).
_SEPARATOR = "\x00"
_TOKEN_OR_SEPARATOR = re.compile(_TOKEN.pattern + "|" + _SEPARATOR)
_ASCII_TOKEN_OR_SEPARATOR = re.compile(_TOKEN_OR_SEPARATOR.pattern, re.ASCII)
# What ``_ascii_tokens`` keeps of case-folded ASCII text; every other character separates words.
_ASCII_TO_SPACE = str.maketrans({code: " " for code in range(128)
                                 if chr(code) not in string.ascii_lowercase + string.digits + "'" + _SEPARATOR})
# An apostrophe belongs to a word only between two of its letters or digits ...
_LONE_APOSTROPHE = re.compile(r"'(?:(?![a-z0-9])|(?<![a-z0-9]'))")
# ... and only once: in "rock'n'roll" the second one separates (the token is "rock'n", then "roll").
_APOSTROPHE_CHAIN = re.compile(r"'(?<=[a-z0-9]')[a-z0-9]+'(?=[a-z0-9])")
# Sentences per batch-encoding step: bounds the temporary arrays for very large inputs.
ENCODE_CHUNK = 4096
# Words whose columns the batch encoder remembers; past this (a stream of unseen words: numbers, typos) it starts
# over from an empty table, so memory stays bounded.
MAX_CACHED_WORDS = 1 << 18


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


# A bag's share of its squared weight on word features (words and word runs) where it has character n-grams too;
# the n-grams share the rest. With one weight for all (1/sqrt(n)) words held their count's share: 7-10% on average
# on the benchmark sets' test sentences, from 0 to 14% between sentences. A fixed share was better on the mean of
# the accuracy harness's five sets (docs/decisions.md, "Bag-of-words features").
WORD_SHARE = 0.08


class Vocabulary(Mapping[str, int]):
    """Feature -> column. Index 0 is padding, so an unknown-only sentence encodes to an empty bag.

    ``word_share``: each bag's weights put this share of its squared norm on its word features and the rest on its
    character n-grams, evenly within each kind; None (checkpoints from before the rule) or a bag of one kind: every
    feature 1/sqrt(n). Every bag's weights have unit L2 norm either way.
    """

    def __init__(self, features: Iterable[str], word_ngrams: int = 2, char_ngrams: int = 0,
                 word_share: float | None = None):
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.word_share = word_share if char_ngrams else None  # words only: one kind, nothing to share
        self._features = [PAD, *features]
        self._index = {feature: index for index, feature in enumerate(self._features)}
        self._table: _WordTable | None = None
        self._chars: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_table": None}  # a cache, rebuilt on first use (and it holds a lock)

    @property
    def _is_char(self) -> np.ndarray:
        """Per column: whether it is a character n-gram (padding: no)."""
        if self._chars is None:
            self._chars = np.fromiter((feature.startswith(CHAR_PREFIX) for feature in self._features), dtype=bool,
                                      count=len(self._features))
        return self._chars

    def bag_weights(self, bag: list[int] | np.ndarray) -> np.ndarray:
        """The weights of one sentence's ``bag`` (as ``encode_flat`` gives them), float32. An array of the columns is
        the fast way in: converting a list costs more than the weights."""
        if self.word_share is not None and len(bag):
            chars = self._is_char[bag]  # one sentence: two scalars and one select, not _weights' batch arithmetic
            n_chars = int(np.count_nonzero(chars))
            n_words = len(bag) - n_chars
            if n_chars and n_words:
                return np.where(chars, np.float32(((1.0 - self.word_share) / n_chars) ** 0.5),
                                np.float32((self.word_share / n_words) ** 0.5))
        return np.full(len(bag), 1.0 / max(len(bag), 1) ** 0.5, dtype=np.float32)

    def _weights(self, indices: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Each entry's weight in bags laid end to end (``lengths``): ``word_share`` of a bag's squared norm on its
        word features, the rest on its character n-grams; a bag of one kind, 1/sqrt(n) each."""
        plain = 1.0 / np.sqrt(np.maximum(lengths, 1))
        if self.word_share is None or not len(indices):
            return np.repeat(plain.astype(np.float32), lengths)
        chars = self._is_char[indices]
        bag = np.repeat(np.arange(len(lengths)), lengths)
        n_chars = np.bincount(bag, weights=chars, minlength=len(lengths))
        n_words = lengths - n_chars
        mixed = (n_chars > 0) & (n_words > 0)
        per_char = np.where(mixed, np.sqrt((1.0 - self.word_share) / np.maximum(n_chars, 1)), plain)
        per_word = np.where(mixed, np.sqrt(self.word_share / np.maximum(n_words, 1)), plain)
        return np.where(chars, per_char[bag], per_word[bag]).astype(np.float32)

    @property
    def _words(self) -> _WordTable:
        """The word table of ``bag`` and ``encode_flat``, built on first use."""
        if self._table is None:
            self._table = _WordTable(self)
        return self._table

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
        """Column indices of the known features of ``text``, each once, in ascending order (as ``encode_flat``).

        For one sentence (interactive predict): each word's own columns come from a cache, the word runs are
        looked up, and no NumPy call's fixed cost is paid.
        """
        words = _TOKEN.findall(text.casefold())
        found = set().union(*map(self._words.columns_of, words))
        for size in range(2, self.word_ngrams + 1):
            runs = zip(*(words[offset:] for offset in range(size)), strict=False)
            found.update(map(self._index.get, map(" ".join, runs)))
        found.discard(None)
        return sorted(found)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Index bags ``[rows, width]`` and their weights; each row's weights have unit L2 norm.

        Binary presence normalised by length keeps short and long sentences on one scale.
        """
        if len(texts) == 1:  # one sentence (interactive predict): skip the batch scatter's fixed cost
            bag = self.bag(texts[0])
            if not bag:
                return torch.zeros((1, 1), dtype=torch.long), torch.zeros((1, 1))
            return torch.tensor([bag], dtype=torch.long), torch.from_numpy(self.bag_weights(bag)).unsqueeze(0)
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
        """The bags of ``encode`` laid end to end without padding: indices, weights, and each sentence's length.

        Each sentence's indices are its ``bag``. They are found for a chunk of sentences at once: one call
        tokenises the chunk (string methods on ASCII text, else a regex); each word's columns (the word's and its
        character n-grams') come from a table that works them out once per distinct word, and for all of a chunk's
        new words at once; word pairs are found by one sorted search; one sort drops each sentence's duplicates.
        No Python runs per feature, so batches with character n-grams encode several times faster than sentence
        by sentence (benchmarks/inference_speed.py).
        """
        parts = [self._words.encode(list(texts[start:start + ENCODE_CHUNK]))
                 for start in range(0, len(texts), ENCODE_CHUNK)]
        indices = np.concatenate([part[0] for part in parts]) if parts else np.zeros(0, dtype=np.int64)
        lengths = np.concatenate([part[1] for part in parts]) if parts else np.zeros(0, dtype=np.int64)
        weights = self._weights(indices, lengths)
        return torch.from_numpy(indices), torch.from_numpy(weights), torch.from_numpy(lengths)


class _WordTable:
    """Each distinct word's known columns (the word's own and its character n-grams'), computed once.

    Words get ids in order of first sight; ``columns[starts[id]:starts[id + 1]]`` are a word's columns. Word 0 is
    the sentence separator, with none. Word pairs in the vocabulary are keyed by their two word ids, so a chunk's
    pairs are found by one sorted search. Thread-safe: a lock guards the table while a chunk looks words up.
    """

    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self._lock = threading.Lock()
        self._reset()

    def columns_of(self, word: str) -> tuple[int, ...]:
        """One word's columns, for one sentence at a time (``Vocabulary.bag``); cached apart from the table."""
        known = self._tuples.get(word)
        if known is None:
            if len(self._tuples) > MAX_CACHED_WORDS:
                self._tuples = {}
            found = set(map(self.vocab._index.get, features_of(word, 1, self.vocab.char_ngrams)))
            found.discard(None)
            known = self._tuples[word] = tuple(found)
        return known

    def _reset(self) -> None:
        self._tuples: dict[str, tuple[int, ...]] = {}
        self.ids: dict[str, int] = {_SEPARATOR: 0}
        self._starts = np.zeros(1024, dtype=np.int64)
        self._columns = np.zeros(8192, dtype=np.int64)
        self._words = 1  # words in the table, the separator included; its columns end at _starts[1] = 0
        self._grams = _CharGrams.of(self.vocab)
        pairs = [feature.split(" ") for feature in self.vocab.features if feature.count(" ") == 1]
        self._grow([word for pair in pairs for word in pair if word not in self.ids])
        keys = np.array([self.ids[first] * _PAIR_KEY + self.ids[second] for first, second in pairs], dtype=np.int64)
        columns = np.array([self.vocab[" ".join(pair)] for pair in pairs], dtype=np.int64)
        order = np.argsort(keys)
        self._pair_keys, self._pair_columns = keys[order], columns[order]

    def _grow(self, words: Iterable[str]) -> None:
        """Give each new word in ``words`` an id and its columns."""
        new = [word for word in dict.fromkeys(words) if word not in self.ids]
        if not new:
            return
        if self._grams is not None:
            own = np.fromiter(map(self.vocab._index.get, new, itertools.repeat(0)), dtype=np.int64, count=len(new))
            known = own > 0
            columns, owners = self._grams.lookup(new)
            columns = np.concatenate([own[known], columns])
            owners = np.concatenate([np.flatnonzero(known), owners])
            order = np.argsort(owners, kind="stable")
            columns, counts = columns[order], np.bincount(owners, minlength=len(new))
        else:  # character n-grams off, or an alphabet too large for one 64-bit key per n-gram: one by one
            found = [self.columns_of(word) for word in new]
            counts = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
            columns = np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64, count=int(counts.sum()))
        base = int(self._starts[self._words])
        self._starts = _append(self._starts, self._words + 1, base + np.cumsum(counts))
        self._columns = _append(self._columns, base, columns)
        self.ids.update(zip(new, range(self._words, self._words + len(new)), strict=True))
        self._words += len(new)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every sentence's bag end to end, and the bags' lengths."""
        blob = _SEPARATOR.join(texts)
        if blob.count(_SEPARATOR) != len(texts) - 1:  # a sentence holds the separator itself: it is not a word
            blob = _SEPARATOR.join(text.replace(_SEPARATOR, " ") for text in texts)
        blob = blob.casefold() + _SEPARATOR
        # isascii is a flag, not a scan.
        tokens = _ascii_tokens(blob) if blob.isascii() else _TOKEN_OR_SEPARATOR.findall(blob)
        with self._lock:
            if len(self.ids) > MAX_CACHED_WORDS:
                self._reset()
            word = np.fromiter(map(self.ids.get, tokens, itertools.repeat(-1)), dtype=np.int64, count=len(tokens))
            unseen = np.flatnonzero(word < 0).tolist()
            if unseen:
                self._grow([tokens[at] for at in unseen])
                word[unseen] = [self.ids[tokens[at]] for at in unseen]
            starts, columns = self._starts[:self._words + 1], self._columns
            pair_keys, pair_columns = self._pair_keys, self._pair_columns
        ends = word == 0
        sentence = np.cumsum(ends) - ends  # each token's sentence; separators close theirs
        first, count = starts[word], starts[word + 1] - starts[word]
        total = int(count.sum())
        position = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(total)
        found_columns, found_rows = [columns[position]], [np.repeat(sentence, count)]
        if self.vocab.word_ngrams > 1 and len(pair_keys):  # a pair across sentences holds the separator: unknown
            keys = word[:-1] * _PAIR_KEY + word[1:]
            at = np.minimum(np.searchsorted(pair_keys, keys), len(pair_keys) - 1)
            known = pair_keys[at] == keys
            found_columns.append(pair_columns[at[known]])
            found_rows.append(sentence[:-1][known])
        get = self.vocab._index.get
        for size in range(3, self.vocab.word_ngrams + 1):  # longer runs: looked up as strings
            runs = map(" ".join, zip(*(tokens[offset:] for offset in range(size)), strict=False))
            run_columns = np.fromiter(map(get, runs, itertools.repeat(0)), dtype=np.int64,
                                      count=max(len(tokens) - size + 1, 0))
            known = run_columns > 0
            found_columns.append(run_columns[known])
            found_rows.append(sentence[:len(run_columns)][known])
        width = len(self.vocab)
        keys = np.concatenate(found_rows) * width + np.concatenate(found_columns)
        # Stable (timsort): it takes the runs the keys already hold (each part is in sentence order), so it is
        # faster than the default sort here (docs/decisions.md#speed-of-batch-prediction).
        keys.sort(kind="stable")
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
        rows = keys // width
        return keys - rows * width, np.bincount(rows, minlength=len(texts))


def _ascii_tokens(blob: str) -> list[str]:
    """``_ASCII_TOKEN_OR_SEPARATOR.findall(blob)`` for case-folded ASCII text, three to five times faster: C string
    methods do what the regex engine does a character at a time (docs/decisions.md#speed-of-batch-prediction)."""
    if "'" in blob:
        if _APOSTROPHE_CHAIN.search(blob):
            return _ASCII_TOKEN_OR_SEPARATOR.findall(blob)
        blob = _LONE_APOSTROPHE.sub(" ", blob)
    return blob.translate(_ASCII_TO_SPACE).replace(_SEPARATOR, f" {_SEPARATOR} ").split()


class _CharGrams:
    """The vocabulary's character n-grams as integer keys, so the n-grams of many words are looked up at once.

    Each character the n-grams use gets a code from 1 (any other character gets the code after the last, which no
    key holds); an n-gram's key is its codes' digits in base ``2 ** bits``. Exact: keys of different lengths fall in
    disjoint ranges, as no code is 0.
    """

    def __init__(self, grams: list[str], columns: list[int], ngrams: int, bits: int, points: np.ndarray):
        self.ngrams, self.bits, self.points = ngrams, bits, points
        keys = self._codes("".join(grams))
        lengths = np.array([len(gram) for gram in grams], dtype=np.int64)
        gram_keys = np.zeros(len(grams), dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        for offset in range(int(lengths.max(initial=0))):
            longer = lengths > offset
            gram_keys[longer] = (gram_keys[longer] << bits) | keys[starts[longer] + offset]
        order = np.argsort(gram_keys)
        self.keys, self.columns = gram_keys[order], np.array(columns, dtype=np.int64)[order]

    @classmethod
    def of(cls, vocab: Vocabulary) -> _CharGrams | None:
        """The keys of ``vocab``'s character n-grams; None when it has none, or too many distinct characters."""
        if not vocab.char_ngrams:
            return None
        grams = {feature[len(CHAR_PREFIX):]: column for feature, column in vocab._index.items()
                 if feature.startswith(CHAR_PREFIX)}
        if not grams:
            return None
        points = np.array(sorted({ord(character) for gram in grams for character in gram} | {ord("<")}),
                          dtype=np.int64)
        bits = (len(points) + 1).bit_length()
        if bits * vocab.char_ngrams > 63:
            return None
        return cls(list(grams), list(grams.values()), vocab.char_ngrams, bits, points)

    def _codes(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        at = np.minimum(np.searchsorted(self.points, points), len(self.points) - 1)
        return np.where(self.points[at] == points, at + 1, len(self.points) + 1)

    def lookup(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The known character n-grams of each word marked ``<word>``: their columns, and the word each is of."""
        lengths = np.array([len(word) + 2 for word in words], dtype=np.int64)
        codes = self._codes("".join(f"<{word}>" for word in words))
        owner = np.repeat(np.arange(len(words)), lengths)
        keys = codes
        columns, owners = [], []
        for size in range(2, self.ngrams + 1):
            # The n-gram of ``size`` at each place. One that runs into the next word holds "><", which no n-gram
            # of a single marked word does (words hold neither character), so it finds nothing.
            keys = (keys[:-1] << self.bits) | codes[size - 1:]
            at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            hit = self.keys[at] == keys
            columns.append(self.columns[at[hit]])
            owners.append(owner[:len(keys)][hit])
        if not columns:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(columns), np.concatenate(owners)


# Word-pair key: first word's id * this + second's; word ids stay below it (MAX_CACHED_WORDS plus the vocabulary).
_PAIR_KEY = 1 << 31


def _append(buffer: np.ndarray, at: int, values: np.ndarray) -> np.ndarray:
    """``buffer`` with ``values`` written from ``at`` on, its capacity doubled when they do not fit."""
    if at + len(values) > len(buffer):
        grown = np.zeros(max(2 * len(buffer), at + len(values)), dtype=buffer.dtype)
        grown[:at] = buffer[:at]
        buffer = grown
    buffer[at:at + len(values)] = values
    return buffer


def build_vocabulary(texts: Iterable[str], word_ngrams: int = 2, min_count: int = 1,
                     char_ngrams: int = 0, pair_texts: Iterable[str] | None = None,
                     word_share: float | None = WORD_SHARE) -> Vocabulary:
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
    return Vocabulary(kept, word_ngrams=word_ngrams, char_ngrams=char_ngrams, word_share=word_share)
