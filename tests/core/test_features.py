"""Batch encoding of bags of words: the same bags as one sentence at a time, whatever the text, chunking or threads."""

from __future__ import annotations

import pickle
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from intentflow import features
from intentflow.features import Vocabulary, build_vocabulary, features_of

CORPUS = ["Track my parcel please", "where is my package", "don't cancel my order", "rock'n'roll music now",
          "play some jazz", "Straße nach München", "naïve café au lait", "42 is the answer", "wake me up at 7",
          "ﬁle a complaint", "play music play music"]
SHAPES = [(1, 0), (2, 0), (1, 5), (2, 5), (3, 3), (2, 8)]


def expected_bags(vocab: Vocabulary, texts: list[str]) -> list[list[int]]:
    """The definition: each sentence's known features, each once, in column order."""
    return [sorted({vocab[feature] for feature in features_of(text, vocab.word_ngrams, vocab.char_ngrams)
                    if feature in vocab}) for text in texts]


def expected_weights(vocab: Vocabulary, bag: list[int]) -> list[float]:
    """The definition: unit norm; with character n-grams and words both present, ``word_share`` of the squared norm
    on the words and the rest on the n-grams, evenly within each kind; else 1/sqrt(n) each."""
    chars = [vocab.features[index - 1].startswith(features.CHAR_PREFIX) for index in bag]
    if vocab.word_share is None or all(chars) or not any(chars):
        return [1.0 / max(len(bag), 1) ** 0.5] * len(bag)
    share = {True: (1 - vocab.word_share) / sum(chars), False: vocab.word_share / chars.count(False)}
    return [share[char] ** 0.5 for char in chars]


def flat_bags(vocab: Vocabulary, texts: list[str]) -> list[list[int]]:
    indices, weights, lengths = vocab.encode_flat(texts)
    assert indices.dtype == torch.long and len(lengths) == len(texts) and len(weights) == len(indices)
    rows = torch.split(indices, lengths.tolist())
    for row, weight in zip(rows, torch.split(weights, lengths.tolist()), strict=True):
        assert weight.tolist() == pytest.approx(expected_weights(vocab, row.tolist()), rel=1e-6)
        assert vocab.bag_weights(row.tolist()).tolist() == pytest.approx(weight.tolist(), rel=1e-6)
    return [row.tolist() for row in rows]


@pytest.fixture(params=SHAPES, ids=lambda shape: f"words{shape[0]}-chars{shape[1]}")
def vocab(request) -> Vocabulary:
    word_ngrams, char_ngrams = request.param
    return build_vocabulary(CORPUS, word_ngrams=word_ngrams, char_ngrams=char_ngrams)


def test_a_batch_gives_each_sentence_its_own_bag(vocab):
    texts = ["", "   ", "play music", "PLAY, music!", "music play", "play\x00music", "a\nb\tc",
             "parcels pakage", "unseen words only xyzzy", "café naïve", "Strasse STRASSE", "don't won't",
             "'quoted' rock'n'roll", "123 4567 12", "snake_case_word", "emoji 🎵 music", *CORPUS]
    assert flat_bags(vocab, texts) == expected_bags(vocab, texts)
    assert [vocab.bag(text) for text in texts] == expected_bags(vocab, texts)
    # Unknown words were remembered by the first call: a second gives the same bags.
    assert flat_bags(vocab, texts[::-1]) == expected_bags(vocab, texts[::-1])


def test_words_get_their_share_of_each_bag_and_old_vocabularies_keep_one_weight():
    vocab = build_vocabulary(CORPUS, word_ngrams=2, char_ngrams=5)
    assert vocab.word_share == features.WORD_SHARE
    indices, weights = (tensor[0] for tensor in vocab.encode(["where is my package"]))
    chars = torch.tensor([vocab.features[index - 1].startswith(features.CHAR_PREFIX) for index in indices.tolist()])
    assert 0 < int(chars.sum()) < len(chars)
    assert float((weights ** 2).sum()) == pytest.approx(1.0)
    assert float((weights[~chars] ** 2).sum()) == pytest.approx(features.WORD_SHARE)
    # A vocabulary saved before the rule (no word_share) weighs every feature alike, as it was trained.
    old = Vocabulary(vocab.features, word_ngrams=2, char_ngrams=5)
    assert old.word_share is None
    assert torch.allclose(old.encode(["where is my package"])[1][0], torch.full((len(indices),), len(indices) ** -0.5))
    # Words only: one kind, nothing to share.
    assert build_vocabulary(CORPUS, word_ngrams=2).word_share is None


def test_an_ascii_batch_takes_the_fast_tokeniser_and_gets_the_same_bags(vocab):
    texts = ["", "play music", "PLAY, music!", "play\x00music", "a\nb\tc", "don't won't", "'quoted' music'",
             "a''b x'_y", "rock'n'roll", "123 4567 12", "snake_case_word", "it's 5'o clock", *CORPUS[:5]]
    assert all(text.isascii() for text in texts)
    assert flat_bags(vocab, texts) == expected_bags(vocab, texts)  # "rock'n'roll": this chunk takes the regex
    assert flat_bags(vocab, [text for text in texts if "rock'n" not in text]) == \
        expected_bags(vocab, [text for text in texts if "rock'n" not in text])


# The characters where the fast tokeniser and the regex could part ways: apostrophes, underscores, separators.
@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab1 '_\x00-.\t\n\x1e", max_size=30))
def test_the_fast_ascii_tokeniser_finds_what_the_regex_finds(text):
    assert features._ascii_tokens(text) == features._ASCII_TOKEN_OR_SEPARATOR.findall(text)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
                | st.sampled_from(CORPUS).map(str.upper), max_size=12),
       st.sampled_from(SHAPES))
def test_any_text_gets_the_bag_of_its_features(texts, shape):
    vocab = build_vocabulary(CORPUS, word_ngrams=shape[0], char_ngrams=shape[1])
    assert flat_bags(vocab, texts) == expected_bags(vocab, texts)


def test_chunks_and_a_reset_word_table_change_no_bag(monkeypatch):
    vocab = build_vocabulary(CORPUS, word_ngrams=2, char_ngrams=5)
    texts = [f"{CORPUS[number % len(CORPUS)]} word{number} {number}" for number in range(300)]
    expected = expected_bags(vocab, texts)
    monkeypatch.setattr(features, "ENCODE_CHUNK", 7)
    monkeypatch.setattr(features, "MAX_CACHED_WORDS", 50)
    assert flat_bags(vocab, texts) == expected
    # The table started over whenever it held more than 50 words: it never grew past one chunk's worth more.
    assert len(vocab._words.ids) <= 50 + 7 * 4


def test_an_alphabet_too_large_for_one_key_falls_back_to_one_word_at_a_time():
    # 8-character n-grams of 301 distinct characters need 9 bits each, 72 in all: more than a key holds.
    corpus = ["".join(chr(0x4E00 + number + offset) for offset in range(7)) for number in range(0, 301, 7)]
    vocab = build_vocabulary(corpus, word_ngrams=1, char_ngrams=8)
    assert features._CharGrams.of(vocab) is None
    texts = [*corpus[:20], " ".join(corpus[20:25]), corpus[30][::-1], "unknown 字"]
    assert flat_bags(vocab, texts) == expected_bags(vocab, texts)
    assert features._CharGrams.of(build_vocabulary(corpus, word_ngrams=1, char_ngrams=7)) is not None


def test_threads_encoding_at_once_get_the_same_bags(monkeypatch):
    monkeypatch.setattr(features, "ENCODE_CHUNK", 16)
    vocab = build_vocabulary(CORPUS, word_ngrams=2, char_ngrams=5)
    batches = [[f"{text} thread{thread} n{number}" for number, text in enumerate(CORPUS * 20)]
               for thread in range(4)]
    results: dict[int, list[list[int]]] = {}

    def encode(thread: int) -> None:
        results[thread] = flat_bags(vocab, batches[thread])

    workers = [threading.Thread(target=encode, args=(thread,)) for thread in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(results[thread] == expected_bags(vocab, batches[thread]) for thread in range(4))


def test_a_pickled_vocabulary_encodes_the_same():
    vocab = build_vocabulary(CORPUS, word_ngrams=2, char_ngrams=5)
    texts = [*CORPUS, "parcels pakage"]
    before = flat_bags(vocab, texts)
    assert flat_bags(pickle.loads(pickle.dumps(vocab)), texts) == before


def test_a_batch_over_many_chunks_predicts_what_one_chunk_does(toy_model, monkeypatch):
    from intentflow import inference
    from intentflow.inference import Classifier

    classifier = Classifier.from_trained(toy_model.trained)
    texts = [f"{row.text} {number}" for number, row in enumerate(toy_model.data.val * 3)]
    whole = classifier.probabilities(texts)
    monkeypatch.setattr(inference, "PREDICT_CHUNK", 5)  # many chunks: the network runs in the second thread
    chunked = classifier.probabilities(texts)
    assert chunked.shape == (len(texts), len(classifier.labels))
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert [p.label for p in classifier.predict_batch(texts)] == [classifier.predict(text).label for text in texts]
    assert classifier.probabilities([]).shape == (0, len(classifier.labels))
