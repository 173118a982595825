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
    if evaluation.oos_threshold is None:
        return ["out-of-scope: off (every sentence gets an outcome)"]
    lines = [f"out-of-scope threshold: {evaluation.oos_threshold:.4f}  accuracy without it: "
             f"{_pct(evaluation.accuracy_without_oos)}"]
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
                  mode: str = "full") -> str:
    """What changed versus production: outcomes, accuracy, data hash, config."""
    accuracy = candidate["metrics"].get("val_accuracy")
    lines = [f"- training mode: {mode}", f"- outcome content hash: `{candidate.get('outcome_hash', '')[:12]}`"]
    if production is None:
        lines += [f"- first version: {len(candidate['labels'])} outcomes ({', '.join(candidate['labels'])})",
                  f"- validation accuracy: {_pct(accuracy)}"]
        return "\n".join(lines)
    added = sorted(set(candidate["labels"]) - set(production["labels"]))
    removed = sorted(set(production["labels"]) - set(candidate["labels"]))
    previous_accuracy = production.get("metrics", {}).get("val_accuracy")
    lines += [
        f"- compared with production {production_version}",
        f"- outcomes added: {', '.join(added) or 'none'}",
        f"- outcomes removed: {', '.join(removed) or 'none'}",
        f"- validation accuracy: {_pct(accuracy)} (production at its own training: {_pct(previous_accuracy)}, "
        f"change {_signed(accuracy, previous_accuracy)})",
        f"- data hash: `{production.get('outcome_hash', '')[:12]}` -> `{candidate.get('outcome_hash', '')[:12]}`"
        + (" (unchanged)" if production.get("outcome_hash") == candidate.get("outcome_hash") else ""),
    ]
    changes = config_changes(production.get("config", {}), candidate.get("config", {}))
    lines.append("- config changes: " + (", ".join(changes) if changes else "none"))
    return "\n".join(lines)


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changes = []
    for section in ("prepare", "train"):
        old, new = before.get(section, {}) or {}, after.get(section, {}) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                changes.append(f"{section}.{key} {old.get(key)!r} -> {new.get(key)!r}")
    return changes


def run_report(version: str, evaluation: Evaluation, decision: dict[str, Any], notes: str) -> str:
    """The markdown report of one retrain run: metrics, per-outcome table, confusions, gate, release notes."""
    verdict = "promoted to production" if decision["promote"] else "rejected"
    production = decision.get("production_accuracy")
    return "\n".join([
        f"# {version}: {verdict}",
        "",
        "## Gate",
        "",
        f"- candidate validation accuracy: {decision['candidate_accuracy']:.4f}",
        f"- threshold: {decision['threshold']:.4f}",
        "- production re-scored on the candidate's validation set: "
        + (f"{production:.4f} ({decision.get('production_version')}), tolerance {decision['tolerance']:.4f}"
           if production is not None else "not compared (no production with the same outcomes)"),
        f"- decision: {decision['reason']}",
        "",
        "## Evaluation (validation set: held-out originals and their paraphrases)",
        "",
        evaluation_markdown(evaluation),
        "",
        "## Release notes",
        "",
        notes,
        "",
    ])


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _signed(new: float | None, old: float | None) -> str:
    if new is None or old is None:
        return "n/a"
    return f"{(new - old) * 100:+.2f} points"
