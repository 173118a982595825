"""The deployment gate: good enough on its own, and no worse than production re-scored on the same sentences."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from intentflow.config import GateConfig
from intentflow.gate import GateDecision, gate_candidate
from intentflow.inference import Prediction

LABELS = ["check_weather", "play_music", "set_alarm"]
TEXTS = [f"sentence {index}" for index in range(10)]
TRUTH = ["check_weather"] * 4 + ["play_music"] * 3 + ["set_alarm"] * 3


class Production:
    """Stands in for a loaded production classifier: answers right for the first ``correct`` sentences."""

    def __init__(self, correct: int, labels: Sequence[str] = LABELS) -> None:
        self.labels = list(labels)
        self.correct = correct
        self.calls = 0

    def predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        self.calls += 1
        wrong = {"check_weather": "play_music", "play_music": "set_alarm", "set_alarm": "check_weather"}
        return [Prediction(truth if index < self.correct else wrong[truth], 0.9)
                for index, truth in enumerate(TRUTH[:len(texts)])]


def decide(candidate_accuracy: float, production: Production | None = None, threshold: float = 0.6,
           tolerance: float = 0.01, labels: Sequence[str] = LABELS) -> GateDecision:
    return gate_candidate(candidate_accuracy, list(labels), TEXTS, TRUTH,
                          GateConfig(threshold=threshold, tolerance=tolerance), production,
                          "intent_model_v2026-10" if production is not None else None)


def test_below_the_threshold_is_rejected_with_the_numbers() -> None:
    decision = decide(0.55, threshold=0.6)
    assert decision.promote is False
    assert decision.candidate_accuracy == 0.55
    assert decision.threshold == 0.6
    assert "validation accuracy 0.5500 is below the threshold 0.6000" in decision.reason
    assert decision.production_accuracy is None


def test_exactly_the_threshold_passes() -> None:
    decision = decide(0.6, threshold=0.6)
    assert decision.promote is True
    assert "0.6000 meets the threshold 0.6000" in decision.reason


def test_first_version_promotes_without_a_comparison() -> None:
    decision = decide(0.9)
    assert decision.promote is True
    assert decision.production_accuracy is None
    assert decision.production_version is None
    assert "production" not in decision.reason


def test_worse_than_production_beyond_tolerance_is_rejected() -> None:
    production = Production(correct=10)  # re-scores 1.0 on the candidate's validation set
    decision = decide(0.8, production, threshold=0.6, tolerance=0.05)
    assert decision.promote is False
    assert decision.production_accuracy == 1.0
    assert decision.production_version == "intent_model_v2026-10"
    assert ("validation accuracy 0.8000 is worse than production intent_model_v2026-10 re-scored on the same "
            "10 validation sentences (1.0000) by more than the tolerance 0.0500") in decision.reason
    assert "below the threshold" not in decision.reason
    assert production.calls == 1


def test_within_tolerance_of_production_is_promoted() -> None:
    production = Production(correct=9)  # 0.9
    decision = decide(0.88, production, tolerance=0.05)
    assert decision.promote is True
    assert decision.production_accuracy == pytest.approx(0.9)
    assert "production intent_model_v2026-10 scores 0.9000 against 0.8800 on the same 10 sentences" in decision.reason


def test_just_beyond_tolerance_is_rejected() -> None:
    production = Production(correct=9)  # 0.9
    assert decide(0.84, production, tolerance=0.05).promote is False
    assert decide(0.86, production, tolerance=0.05).promote is True


def test_better_than_production_is_promoted() -> None:
    decision = decide(1.0, Production(correct=5))
    assert decision.promote is True
    assert decision.production_accuracy == 0.5


def test_both_reasons_are_given_when_both_fail() -> None:
    decision = decide(0.5, Production(correct=10), threshold=0.6)
    assert decision.promote is False
    assert "below the threshold" in decision.reason and "worse than production" in decision.reason


@pytest.mark.parametrize("labels", [LABELS[:2], [*LABELS[:2], "order_food"]])
def test_production_with_other_outcomes_is_compared_on_the_outcomes_both_know(labels: list[str]) -> None:
    production = Production(correct=10, labels=labels)
    candidate = Candidate(set(range(5)))  # right on the first five of the seven shared-outcome sentences
    decision = gate_candidate(0.7, LABELS, TEXTS, TRUTH, GateConfig(threshold=0.6, tolerance=0.01), production,
                              "intent_model_v2026-10", candidate=candidate)
    assert decision.compared_samples == 7  # check_weather and play_music; set_alarm's three are left out
    assert decision.production_accuracy == 1.0
    assert decision.candidate_compared_accuracy == pytest.approx(5 / 7)
    assert decision.promote is False
    assert "on the same 7 validation sentences" in decision.reason


def test_production_sharing_no_outcome_is_not_compared_and_says_why() -> None:
    production = Production(correct=10, labels=["a", "b", "c"])
    decision = decide(0.7, production)
    assert decision.promote is True
    assert decision.production_accuracy is None
    assert production.calls == 0
    assert decision.not_compared == "production intent_model_v2026-10 shares no outcome with the candidate"


def test_label_order_does_not_matter() -> None:
    decision = decide(0.7, Production(correct=10, labels=list(reversed(LABELS))))
    assert decision.production_accuracy == 1.0
    assert decision.promote is False


def test_decision_serialises_for_version_json() -> None:
    data = decide(0.9, Production(correct=9)).to_dict()
    assert set(data) == {"promote", "candidate_accuracy", "threshold", "tolerance", "production_accuracy",
                         "production_version", "reason", "candidate_compared_accuracy", "compared_samples",
                         "not_compared", "golden_samples", "golden_accuracy", "golden_oos_recall", "golden_overall",
                         "golden_production_overall"}
    assert data["production_accuracy"] == pytest.approx(0.9)


class Candidate:
    """A candidate that answers right for every sentence whose index is in ``right``."""

    labels = LABELS

    def __init__(self, right: set[int]) -> None:
        self.right = right

    def predict_batch(self, texts: Sequence[str]) -> list[Prediction]:
        wrong = {"check_weather": "play_music", "play_music": "set_alarm", "set_alarm": "check_weather"}
        return [Prediction(TRUTH[int(text.split()[1])] if int(text.split()[1]) in self.right
                           else wrong[TRUTH[int(text.split()[1])]], 0.9) for text in texts]


def test_production_is_compared_only_on_sentences_it_did_not_train_on() -> None:
    # Production trained on the originals of sentences 0-4 (it scores them right from memory) and gets the rest
    # wrong; the candidate gets 0-4 wrong and the rest right. On the full set they would tie at 0.5, but only
    # sentences 5-9 are a fair comparison: there the candidate scores 1.0 and production 0.0.
    production = Production(correct=5)
    production.payload = {"train_originals": [f"original {index}" for index in range(5)]}
    originals = [f"Original  {index}" for index in range(10)]  # normalised before comparing
    decision = gate_candidate(0.5, LABELS, TEXTS, TRUTH, GateConfig(threshold=0.4, tolerance=0.01), production,
                              "intent_model_v2026-10", candidate=Candidate(set(range(5, 10))), val_originals=originals)
    assert decision.compared_samples == 5
    assert decision.production_accuracy == 0.0
    assert decision.candidate_compared_accuracy == 1.0
    assert decision.promote is True


def test_no_comparison_when_production_trained_on_every_validation_original() -> None:
    production = Production(correct=10)
    production.payload = {"train_originals": [f"original {index}" for index in range(10)]}
    decision = gate_candidate(0.7, LABELS, TEXTS, TRUTH, GateConfig(threshold=0.6), production,
                              "intent_model_v2026-10", val_originals=[f"original {index}" for index in range(10)])
    assert decision.production_accuracy is None and decision.compared_samples is None
    assert decision.promote is True


def test_originals_either_model_learnt_are_left_out_of_the_comparison() -> None:
    # The candidate learnt originals 0-3 (an incremental run inherits what production's held-out model learnt, or a
    # sentence moved across the split); production learnt 8 and 9. Only 4-7 are new to both.
    production = Production(correct=10)
    production.payload = {"train_originals": ["original 8", "original 9"]}
    originals = [f"original {index}" for index in range(10)]
    decision = gate_candidate(0.6, LABELS, TEXTS, TRUTH, GateConfig(threshold=0.5, tolerance=0.01), production,
                              "intent_model_v2026-10", candidate=Candidate(set(range(6))), val_originals=originals,
                              candidate_trained_on=originals[:4])
    assert decision.compared_samples == 4
    assert decision.candidate_compared_accuracy == 0.5  # right on 4 and 5, wrong on 6 and 7


def test_the_reason_no_comparison_ran_is_the_true_one() -> None:
    # A refit production published before versions kept their held-out model learnt every validation original.
    production = Production(correct=10)
    production.payload = {"train_originals": [f"original {index}" for index in range(10)],
                          "metrics": {"refit": {"epochs": 3}}}
    decision = gate_candidate(0.7, LABELS, TEXTS, TRUTH, GateConfig(threshold=0.6), production,
                              "intent_model_v2026-10", val_originals=[f"original {index}" for index in range(10)])
    assert decision.production_accuracy is None
    assert decision.not_compared == ("production intent_model_v2026-10 was refit on them and keeps no held-out model "
                                     "(it was published before versions kept one): no validation sentence of a "
                                     "shared outcome is new to both models")
