"""Human-readable renderings of an evaluation: plain text for the terminal, markdown for reports."""

from __future__ import annotations

from typing import Any

from intentflow.evaluate import Evaluation


def evaluation_text(evaluation: Evaluation, source: str) -> str:
    lines = [
        f"data: {source}",
        f"accuracy: {evaluation.accuracy:.4f}  macro-F1: {evaluation.macro_f1:.4f}  samples: {evaluation.samples}",
        *_oos_lines(evaluation),
        "",
        f"{'outcome':<28} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}",
    ]
    for score in evaluation.per_label:
        lines.append(f"{score.label:<28} {score.precision:>9.3f} {score.recall:>7.3f} {score.f1:>7.3f} "
                     f"{score.support:>8}")
    if evaluation.confused_pairs:
        lines += ["", "most confused (true -> predicted: count):"]
        lines += [f"  {true} -> {predicted}: {count}" for true, predicted, count in evaluation.confused_pairs]
    if evaluation.unknown_labels:
        lines += ["", f"labels the model does not know: {', '.join(evaluation.unknown_labels)}"]
    return "\n".join(lines)


def _oos_lines(evaluation: Evaluation) -> list[str]:
    if evaluation.oos_threshold is None and evaluation.oos_similarity is None:
        return ["out-of-scope: off (every sentence gets an outcome)"]
    rules = [*([f"similarity to the nearest example below {evaluation.oos_similarity:.4f}"]
               if evaluation.oos_similarity is not None else []),
             *([f"confidence below {evaluation.oos_threshold:.4f}"] if evaluation.oos_threshold is not None else [])]
    lines = [f"out of scope: {' or '.join(rules)}  accuracy without it: {_pct(evaluation.accuracy_without_oos)}"]
    if evaluation.oos_recall is not None:
        lines.append(f"out-of-scope recall: {evaluation.oos_recall:.4f} of {evaluation.oos_samples} sentences")
    return lines


def evaluation_markdown(evaluation: Evaluation) -> str:
    lines = [
        f"**Accuracy** {evaluation.accuracy:.2%} · **macro-F1** {evaluation.macro_f1:.4f} · "
        f"**samples** {evaluation.samples}",
        "",
        *(f"{line}  " for line in _oos_lines(evaluation)),
        "",
        "| outcome | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {s.label} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.support} |"
              for s in evaluation.per_label]
    lines += ["", "**Most confused pairs**", ""]
    if evaluation.confused_pairs:
        lines += ["| true | predicted | count |", "| --- | --- | ---: |"]
        lines += [f"| {t} | {p} | {c} |" for t, p, c in evaluation.confused_pairs]
    else:
        lines.append("none: every validation sentence was labelled correctly")
    return "\n".join(lines)


def release_notes(candidate: dict[str, Any], production: dict[str, Any] | None, production_version: str | None,
                  mode: str = "full", decision: dict[str, Any] | None = None) -> str:
    """What changed versus production: outcomes, accuracy, data hash, config.

    Accuracies are the held-out model's on sentences it never learnt; the change against production is the gate's
    comparison of both held-out models on the same sentences, never two figures from different validation sets.
    """
    accuracy = candidate["metrics"].get("val_accuracy")
    lines = [f"- training mode: {mode}", f"- outcome content hash: `{candidate.get('outcome_hash', '')[:12]}`"]
    if production is None:
        lines += [f"- first version: {len(candidate['labels'])} outcomes ({', '.join(candidate['labels'])})",
                  f"- validation accuracy (held-out): {_pct(accuracy)}"]
        return "\n".join(lines + _golden_notes(decision))
    added = sorted(set(candidate["labels"]) - set(production["labels"]))
    removed = sorted(set(production["labels"]) - set(candidate["labels"]))
    lines += [
        f"- compared with production {production_version}",
        f"- outcomes added: {', '.join(added) or 'none'}",
        f"- outcomes removed: {', '.join(removed) or 'none'}",
        f"- validation accuracy (held-out): {_pct(accuracy)}",
    ]
    if decision and decision.get("production_accuracy") is not None:
        lines.append(f"- on the {decision['compared_samples']} validation sentences neither model learnt: "
                     f"{_pct(decision['candidate_compared_accuracy'])} against production's "
                     f"{_pct(decision['production_accuracy'])} "
                     f"({_signed(decision['candidate_compared_accuracy'], decision['production_accuracy'])})")
    elif decision:
        lines.append(f"- not compared with production on the validation set: {decision.get('not_compared')}")
    lines += _golden_notes(decision)
    lines.append(f"- data hash: `{production.get('outcome_hash', '')[:12]}` -> "
                 f"`{candidate.get('outcome_hash', '')[:12]}`"
                 + (" (unchanged)" if production.get("outcome_hash") == candidate.get("outcome_hash") else ""))
    changes = config_changes(production.get("config", {}), candidate.get("config", {}))
    lines.append("- config changes: " + (", ".join(changes) if changes else "none"))
    return "\n".join(lines)


def _golden_notes(decision: dict[str, Any] | None) -> list[str]:
    if not decision or decision.get("golden_overall") is None:
        return []
    line = f"- golden set, overall: {_pct(decision['golden_overall'])}"
    if decision.get("golden_production_overall") is not None:
        line += (f" against production's {_pct(decision['golden_production_overall'])} "
                 f"({_signed(decision['golden_overall'], decision['golden_production_overall'])})")
    return [line]


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changes = []
    for section in ("prepare", "train"):
        old, new = before.get(section, {}) or {}, after.get(section, {}) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                changes.append(f"{section}.{key} {old.get(key)!r} -> {new.get(key)!r}")
    return changes


def run_report(version: str, evaluation: Evaluation, decision: dict[str, Any], notes: str,
               golden: Evaluation | None = None) -> str:
    """The markdown report of one retrain run: gate, held-out evaluation, golden set, release notes."""
    verdict = "promoted to production" if decision["promote"] else "rejected"
    production = decision.get("production_accuracy")
    compared = (f"{production:.4f} against the candidate's {decision['candidate_compared_accuracy']:.4f} on "
                f"{decision['compared_samples']} sentences neither model learnt ({decision.get('production_version')}"
                f"), tolerance {decision['tolerance']:.4f}" if production is not None
                else f"not compared: {decision.get('not_compared') or 'no production'}")
    lines = [
        f"# {version}: {verdict}",
        "",
        "## Gate",
        "",
        "Every figure here is measured on sentences the judged model never learnt.",
        "",
        f"- candidate validation accuracy (held-out model): {decision['candidate_accuracy']:.4f}",
        f"- threshold: {decision['threshold']:.4f}",
        f"- production's held-out model on the candidate's validation set: {compared}",
    ]
    if decision.get("golden_overall") is not None:
        versus = (f", production {decision['golden_production_overall']:.4f}"
                  if decision.get("golden_production_overall") is not None else "")
        lines.append(f"- golden set (served model): in-scope accuracy {decision['golden_accuracy']:.4f}, overall "
                     f"{decision['golden_overall']:.4f}{versus}")
    lines += [
        f"- decision: {decision['reason']}",
        "",
        "## Evaluation (validation set: held-out originals and their paraphrases, never learnt by the held-out model)",
        "",
        evaluation_markdown(evaluation),
        "",
    ]
    if golden is not None:
        lines += ["## Golden set (labelled real utterances no model trains on; the served model)", "",
                  evaluation_markdown(golden), ""]
    lines += ["## Release notes", "", notes, ""]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _signed(new: float | None, old: float | None) -> str:
    if new is None or old is None:
        return "n/a"
    return f"{(new - old) * 100:+.2f} points"
