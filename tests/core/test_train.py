"""The training loop overfits a learnable toy set, is reproducible, and keeps the best epoch's weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import intentflow.kernels as kernels
from intentflow.config import PrepareConfig
from intentflow.dataset import prepare_data
from intentflow.errors import IntentflowError
from intentflow.features import tokenize
from intentflow.inference import Classifier
from intentflow.outcomes import load_outcomes
from intentflow.refit import refit_model
from intentflow.split import Split
from intentflow.train import train_model

from .helpers import TOY, tiny_train_config


@pytest.fixture
def toy_rows(toy_folder):
    data = prepare_data(load_outcomes(toy_folder), PrepareConfig(augment_factor=12, min_val_per_label=2, seed=1))
    return data


def texts_labels(rows) -> tuple[list[str], list[str]]:
    return [row.text for row in rows], [row.label for row in rows]


def test_overfits_the_toy_set(toy_rows):
    texts, labels = texts_labels(toy_rows.train + toy_rows.val)

    trained = train_model(texts, labels, [], [], tiny_train_config(epochs=60, patience=0))

    assert max(stats.train_accuracy for stats in trained.history) == 1.0
    classifier = Classifier.from_trained(trained)
    assert [p.label for p in classifier.predict_batch(texts)] == labels
    originals = [(text, name) for name, data in TOY.items() for text in data["examples"]]
    assert [classifier.predict(text).label for text, _ in originals] == [name for _, name in originals]
    assert trained.labels == sorted(TOY)
    assert len(trained.history) == 60 and not trained.stopped_early


def test_generalises_to_held_out_originals_of_the_toy_set(toy_rows):
    trained = train_model(*texts_labels(toy_rows.train), *texts_labels(toy_rows.val), tiny_train_config())

    # Validation holds whole originals the network never saw, so this is not memorisation.
    assert trained.metrics["val_accuracy"] >= 0.9
    assert trained.metrics["train_accuracy"] == 1.0


def test_same_data_seed_and_device_give_identical_runs(toy_rows):
    args = (*texts_labels(toy_rows.train), *texts_labels(toy_rows.val))
    config = tiny_train_config(epochs=15, dropout=0.3)

    first = train_model(*args, config)
    second = train_model(*args, config)
    other_seed = train_model(*args, tiny_train_config(epochs=15, dropout=0.3, seed=4))

    assert first.history == second.history
    assert first.metrics == second.metrics
    assert first.model.state_dict().keys() == second.model.state_dict().keys()
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
    assert first.history != other_seed.history


def val_loss_of(trained, texts: list[str], labels: list[str]) -> float:
    index = {label: i for i, label in enumerate(trained.labels)}
    trained.model.eval()
    with torch.no_grad():
        logits = trained.model(*trained.vocab.encode(texts))
        return F.cross_entropy(logits, torch.tensor([index[label] for label in labels]),
                               label_smoothing=trained.config.label_smoothing).item()


def test_early_stopping_restores_the_best_epoch(toy_rows):
    train_texts, train_labels = texts_labels(toy_rows.train)
    # Honest validation rows plus a few training sentences with wrong labels: validation loss first falls,
    # then rises as the network grows confident on the training labels.
    wrong = {"check_weather": "play_music", "play_music": "set_alarm", "set_alarm": "check_weather"}
    val_texts = [row.text for row in toy_rows.val] + train_texts[:6]
    val_labels = [row.label for row in toy_rows.val] + [wrong[label] for label in train_labels[:6]]
    patience = 2

    trained = train_model(train_texts, train_labels, val_texts, val_labels,
                          tiny_train_config(epochs=60, patience=patience, min_delta=0.0, linear_share=0.0))

    assert trained.stopped_early
    assert trained.best_epoch > 1
    assert len(trained.history) == trained.best_epoch + patience < 60
    best = trained.history[trained.best_epoch - 1]
    assert best.val_loss == min(stats.val_loss for stats in trained.history)
    restored = val_loss_of(trained, val_texts, val_labels)
    assert restored == pytest.approx(best.val_loss, abs=1e-5)
    # The restore matters: the last epoch's weights scored differently.
    assert abs(trained.history[-1].val_loss - best.val_loss) > 1e-3
    assert trained.metrics == {
        "best_epoch": trained.best_epoch, "epochs_run": len(trained.history), "stopped_early": True,
        "train_loss": best.train_loss, "train_accuracy": best.train_accuracy, "val_loss": best.val_loss,
        "val_accuracy": best.val_accuracy, "device": "cpu", "oos_threshold": None, "oos_similarity": None,
        "refit": None, "linear": None, "head_epochs": None,
    }


def test_patience_zero_trains_every_epoch(toy_rows):
    wrong = {"check_weather": "play_music", "play_music": "set_alarm", "set_alarm": "check_weather"}
    texts, labels = texts_labels(toy_rows.train)

    trained = train_model(texts, labels, texts, [wrong[label] for label in labels],
                          tiny_train_config(epochs=12, patience=0))

    assert len(trained.history) == 12
    assert not trained.stopped_early
    assert trained.best_epoch < 12


def test_adam_moments_never_decay_into_denormals(toy_rows, monkeypatch):
    # Adam's moments of weights that stop getting gradients decay a step at a time toward zero; below 1.2e-38 floats
    # turn denormal, which x86 CPUs handle a hundred times slower. Training zeroes them before they get there.
    texts, labels = texts_labels(toy_rows.train)
    val_texts, val_labels = texts_labels(toy_rows.val)
    smallest: list[float] = []
    scrub = kernels.scrub_moments

    def watched(optimizer):
        moments = [state[key] for state in optimizer.state.values() for key in ("exp_avg", "exp_avg_sq")]
        smallest.append(min(float(moment[moment != 0].abs().min()) for moment in moments if moment.any()))
        scrub(optimizer)

    monkeypatch.setattr(kernels, "scrub_moments", watched)
    monkeypatch.setattr(kernels, "SCRUB_EVERY", 5)
    # A learning rate that switches ReLU units off: their weights get zero gradients from then on.
    trained = train_model(texts, labels, val_texts, val_labels,
                          tiny_train_config(epochs=100, patience=0, lr=0.05, batch_size=4))

    assert len(smallest) > 100 and all(value >= torch.finfo(torch.float32).tiny for value in smallest)
    assert min(smallest) < 1e-25  # the moments did decay that far, and were caught in time
    assert max(stats.train_accuracy for stats in trained.history) > 0.9


def test_empty_training_set_is_refused():
    with pytest.raises(IntentflowError, match="training set is empty"):
        train_model([], [], [], [], tiny_train_config())


def test_validation_label_unknown_to_training_is_refused():
    with pytest.raises(IntentflowError, match="validation labels not in the training set: greet"):
        train_model(["wake me up", "play jazz"], ["set_alarm", "play_music"], ["hello"], ["greet"],
                    tiny_train_config())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_an_error():
    with pytest.raises(IntentflowError, match="--device cuda"):
        train_model(["wake me up"], ["set_alarm"], [], [], tiny_train_config(device="cuda"))


def test_character_ngrams_are_marked_features_of_each_word():
    from intentflow.features import Vocabulary, features_of

    found = features_of("Track my PARCEL", 1, char_ngrams=3)
    assert found[:3] == ["track", "my", "parcel"]
    assert {"#<p", "#pa", "#<pa", "#el>", "#l>"} <= set(found)
    assert not {"#<par", "#parc"} & set(found)  # nothing longer than 3
    assert all(feature.startswith("#") for feature in found[3:])
    assert features_of("Track my PARCEL", 1) == ["track", "my", "parcel"]
    # A misspelling shares character n-grams with the word, where words alone share nothing.
    assert Vocabulary(found, word_ngrams=1, char_ngrams=3).bag("parcle")
    assert not Vocabulary(found, word_ngrams=1).bag("parcle")


def test_character_ngrams_learn_misspellings_and_survive_a_reload(toy_rows, tmp_path):
    from intentflow.checkpoint import build_payload, save_checkpoint

    train, val = toy_rows.train, toy_rows.val
    trained = train_model(*texts_labels(train), *texts_labels(val), tiny_train_config(char_ngrams=5))
    assert trained.vocab.char_ngrams == 5
    # Misspelt words alone: none is a known word, so words alone would give every probe the same answer.
    probes = {"musik": "play_music", "wether": "check_weather", "alarn": "set_alarm", "playlst": "play_music"}
    assert not set(probes) & set(trained.vocab.features)
    in_memory = Classifier.from_trained(trained)
    assert [p.label for p in in_memory.predict_batch(list(probes))] == list(probes.values())

    path = save_checkpoint(build_payload(trained, outcome_hash="toy", prepare={}, val_texts=[], val_labels=[]),
                           tmp_path / "model.pt")
    loaded = Classifier.load(path)
    assert loaded.vocab.char_ngrams == 5
    assert torch.equal(loaded.probabilities(list(probes)), in_memory.probabilities(list(probes)))


def test_word_pairs_tell_apart_sentences_of_the_same_words_and_survive_a_reload(tmp_path):
    from intentflow.checkpoint import build_payload, save_checkpoint

    texts = ["dog bites man", "the dog bites a man", "man bites dog", "a man bites the dog"]
    labels = ["dog_news", "dog_news", "man_news", "man_news"]
    probes = ["dog bites man today", "man bites dog today"]
    single = Classifier.from_trained(train_model(texts, labels, [], [], tiny_train_config(word_ngrams=1)))
    # The same bag of single words: one answer for both, whatever it is.
    assert torch.equal(*single.probabilities(probes))

    trained = train_model(texts, labels, [], [], tiny_train_config(word_ngrams=2))
    assert {"dog bites", "man bites"} <= set(trained.vocab.features)
    in_memory = Classifier.from_trained(trained)
    assert [p.label for p in in_memory.predict_batch(probes)] == ["dog_news", "man_news"]
    path = save_checkpoint(build_payload(trained, outcome_hash="toy", prepare={}, val_texts=[], val_labels=[]),
                           tmp_path / "model.pt")
    loaded = Classifier.load(path)
    assert loaded.vocab.word_ngrams == 2
    assert torch.equal(loaded.probabilities(probes), in_memory.probabilities(probes))


def test_word_pairs_come_from_the_originals_not_from_paraphrases(toy_rows):
    from intentflow.features import features_of
    from intentflow.train import train_split

    split = Split(toy_rows.train, toy_rows.val)
    assert any(row.synthetic for row in split.train)
    written = {feature for row in split.train if not row.synthetic for feature in features_of(row.text, 2)}
    everywhere = {feature for row in split.train for feature in features_of(row.text, 2)}
    # The toy paraphrases swap and insert words, so pairs nobody wrote exist to be left out.
    assert {pair for pair in everywhere - written if " " in pair}

    trained = train_split(split, tiny_train_config(word_ngrams=2, epochs=3))
    pairs = {feature for feature in trained.vocab.features if " " in feature}
    assert pairs and pairs <= written
    # Single words still come from every row, paraphrases included.
    assert {word for row in split.train for word in tokenize(row.text)} <= set(trained.vocab.features)
    refit = refit_model(trained, split)
    assert {feature for feature in refit.vocab.features if " " in feature} <= {
        feature for row in [*split.train, *split.val] if not row.synthetic for feature in features_of(row.text, 2)}


def test_refit_learns_the_validation_originals_for_the_held_out_runs_epoch_count(toy_rows):
    split = Split(toy_rows.train, toy_rows.val)
    config = tiny_train_config(epochs=60, oos_threshold=0.3)
    held_out = train_model(*texts_labels(split.train), *texts_labels(split.val), config)
    val_only = {word for row in split.val for word in tokenize(row.text)} - set(held_out.vocab.features)
    assert val_only, "the toy split should put some words in validation only"

    held_out.best_epoch = 25  # as if validation had picked epoch 25 of the 60 run
    epochs_seen: list[int] = []

    refitted = refit_model(held_out, split, on_epoch=lambda stats, total: epochs_seen.append(stats.epoch))
    again = refit_model(held_out, split)

    assert epochs_seen == list(range(1, 26))
    rows = len(split.train) + len(split.val)
    assert refitted.refit["epochs"] == held_out.best_epoch and refitted.refit["rows"] == rows
    assert refitted.refit["originals"] == len({row.original for row in [*split.train, *split.val]})
    # It reports the held-out run, which chose the epoch count and was validated; its own figures are under refit.
    assert refitted.history == held_out.history and refitted.best_epoch == held_out.best_epoch
    assert refitted.metrics == {**held_out.metrics, "refit": refitted.refit, "linear": refitted.linear}
    # Its folded linear model learnt every original, the validation ones too.
    assert refitted.linear["examples"] == sum(not row.synthetic for row in [*split.train, *split.val])
    assert held_out.linear["examples"] == len(split.train)  # train_model was not told which rows are originals
    assert refitted.oos_threshold == 0.3
    # It learnt the validation rows: their words are features, and it answers them as their outcomes.
    assert val_only <= set(refitted.vocab.features)
    texts, labels = texts_labels(split.val)
    assert [p.label for p in Classifier.from_trained(refitted).predict_batch(texts)] == labels
    for name, value in refitted.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name


def test_end_to_end_bags_give_each_batch_the_logits_of_its_padded_rows(toy_rows):
    texts, labels = texts_labels(toy_rows.train)
    trained = train_model(texts, labels, [], [], tiny_train_config(epochs=1, patience=0))
    texts[3] = "zzz qqq"  # no known feature: an empty bag, in both layouts
    indices, weights = trained.vocab.encode(texts)
    bags = kernels.Bags(*trained.vocab.encode_flat(texts))
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))
    model = trained.model.eval()

    batches = list(bags.batches(order, 7))

    assert len(batches) == -(-len(texts) // 7)
    assert bags.entries == int((indices != 0).sum()) and bool(bags.lengths[3] == 0)
    with torch.no_grad():
        for number, (flat, flat_weights, offsets) in enumerate(batches):
            rows = order[number * 7:(number + 1) * 7]
            assert flat.dim() == 1 and bool((flat != 0).all()) and len(offsets) == len(rows)
            expected = model(indices[rows], weights[rows])
            torch.testing.assert_close(model(flat, flat_weights, offsets=offsets), expected, rtol=1e-5, atol=1e-6)


def test_with_min_delta_only_an_epoch_that_beats_the_best_by_that_share_counts_as_better(toy_rows):
    args = (*texts_labels(toy_rows.train), *texts_labels(toy_rows.val))

    # The MLP alone: a folded linear model changes the restored network's loss (not the epoch it was restored at).
    plain = train_model(*args, tiny_train_config(epochs=40, patience=4, min_delta=0.0, dropout=0.3, linear_share=0))
    strict = train_model(*args, tiny_train_config(epochs=40, patience=4, min_delta=0.2, dropout=0.3, linear_share=0))

    # The same rule, replayed on the recorded losses: the best moves only on a fall of more than a fifth.
    best_epoch, best_loss, waited = 0, float("inf"), 0
    for stats in strict.history:
        if stats.val_loss < best_loss * 0.8:
            best_epoch, best_loss, waited = stats.epoch, stats.val_loss, 0
        else:
            waited += 1
    assert strict.best_epoch == best_epoch and waited == 4 and strict.stopped_early
    # Smaller falls were there to be taken: without min_delta training found a lower loss and went on longer.
    assert min(stats.val_loss for stats in plain.history) < best_loss
    assert len(plain.history) > len(strict.history)
    restored = val_loss_of(strict, *texts_labels(toy_rows.val))
    assert restored == pytest.approx(best_loss, abs=1e-5)


def test_the_trainers_adamw_is_torchs_fused_adamw_bit_for_bit():
    torch.manual_seed(5)
    weights = [torch.randn(6, 4), torch.randn(4)]
    ours = [weight.clone().requires_grad_(True) for weight in weights]
    torchs = [weight.clone().requires_grad_(True) for weight in weights]
    optimizer = kernels.FusedAdamW(ours, lr=0.003, weight_decay=1e-4)
    reference = torch.optim.AdamW(torchs, lr=0.003, weight_decay=1e-4, fused=True)
    for step in range(5):
        gradients = [torch.randn_like(weight) for weight in weights]
        for parameters, stepper in ((ours, optimizer), (torchs, reference)):
            stepper.zero_grad()
            for parameter, gradient in zip(parameters, gradients, strict=True):
                # A weight without a gradient (frozen this step) is left alone, moments and all.
                parameter.grad = gradient.clone() if step != 2 or parameter.dim() == 2 else None
            stepper.step()
    for mine, theirs in zip(ours, torchs, strict=True):
        assert torch.equal(mine, theirs)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state[mine][key], reference.state[theirs][key]), key

