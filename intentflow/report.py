"""Human-readable renderings of an evaluation: plain text for the terminal, markdown for reports."""

from __future__ import annotations

from intentflow.evaluate import Evaluation


def evaluation_text(evaluation: Evaluation, source: str) -> str:
    lines = [
        f"data: {source}",
        f"accuracy: {evaluation.accuracy:.4f}  macro-F1: {evaluation.macro_f1:.4f}  samples: {evaluation.samples}",
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


def evaluation_markdown(evaluation: Evaluation) -> str:
    lines = [
        f"**Accuracy** {evaluation.accuracy:.2%} · **macro-F1** {evaluation.macro_f1:.4f} · "
        f"**samples** {evaluation.samples}",
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
