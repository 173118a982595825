"""Property: any outcome file either validates or is refused with problems that each name the file and a field.

Hypothesis writes files of random JSON-ish values under random and known keys, random unicode (whitespace, control
characters, unpaired surrogate escapes), repeated keys, cut-off text and bytes that are not UTF-8. Nothing may come out
of ``load_outcomes`` but an ``OutcomeSet`` or ``ValidationFailed``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from intentflow.errors import ValidationFailed, field_name
from intentflow.outcomes import ALLOWED_KEYS, REQUIRED_KEYS, load_outcomes, normalise_text

STEM = "pay_bill"

# Unicode of every category but unpaired surrogates (written as escapes below), plus the whitespace users type.
text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=" \t\n\r\u00a0\u2028\u3000", max_size=5),
    st.sampled_from(["pay my bill", "PAY  my bill", "", "   ", STEM, "Pay_Bill", "../x", "a/b", "é" * 501]),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(text, inner, max_size=4)), max_leaves=12)
keys = st.one_of(st.sampled_from(ALLOWED_KEYS), st.sampled_from(["exampels", "synonym", "Name", "", " "]), text)
utterances = st.one_of(st.lists(text, max_size=6), values)
words = st.text(min_size=1, max_size=30).filter(str.strip)
valid = st.fixed_dictionaries(
    {"name": st.just(STEM), "examples": st.lists(words, min_size=1, max_size=5, unique_by=normalise_text)},
    optional={"description": text, "teach_hints": st.lists(words, max_size=2, unique_by=normalise_text),
              "synonyms": st.dictionaries(words, st.lists(words, min_size=1, max_size=3), max_size=2)},
)
documents = st.one_of(
    valid,
    st.fixed_dictionaries(
        {"name": st.one_of(st.just(STEM), text, values), "examples": utterances},
        optional={"description": st.one_of(text, values), "teach_hints": utterances,
                  "synonyms": st.one_of(st.dictionaries(text, st.one_of(st.lists(text, max_size=4), values),
                                                        max_size=4), values)},
    ).flatmap(lambda document: st.dictionaries(keys, values, max_size=3).map(lambda extra: {**extra, **document})),
    st.dictionaries(keys, values, max_size=6),
    values,
)


@st.composite
def files(draw: st.DrawFn) -> tuple[bytes, Any, bool]:
    """The bytes of a file, the document it was made from, and whether the bytes are that document as JSON."""
    document = draw(documents)
    encoded = json.dumps(document, ensure_ascii=draw(st.booleans()))
    damage = draw(st.sampled_from(["none", "none", "none", "surrogate", "repeat-key", "cut", "bytes"]))
    if damage == "surrogate" and '"' in encoded:
        at = draw(st.integers(0, len(encoded) - 1))
        quote_at = encoded.find('"', at)
        if quote_at > 0:  # just inside a string (or a key): a lone high or low surrogate escape
            escape = draw(st.sampled_from(["\\ud800", "\\udfff", "\\udc80x"]))
            encoded = encoded[: quote_at + 1] + escape + encoded[quote_at + 1:]
        return encoded.encode("utf-8"), document, False
    if damage == "repeat-key" and isinstance(document, dict) and document:
        key = draw(st.sampled_from(sorted(document)))
        encoded = encoded[:-1] + (", " if len(document) else "") + json.dumps(key) + ": 1}"
        return encoded.encode("utf-8"), document, False
    if damage == "cut":
        return encoded[: draw(st.integers(0, len(encoded)))].encode("utf-8"), document, False
    if damage == "bytes":
        return draw(st.binary(max_size=60)), document, False
    return encoded.encode("utf-8"), document, True


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(files())
def test_an_outcome_file_is_valid_or_every_problem_names_file_and_field(file: tuple[bytes, Any, bool]) -> None:
    raw, document, plain_json = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{STEM}.json"
        path.write_bytes(raw)
        try:
            outcomes = load_outcomes(folder)
        except ValidationFailed as error:
            report = str(error)
            problems = error.problems
        else:
            # Accepted: it is really usable, down to the hash every run is named by.
            event("accepted")
            [outcome] = outcomes.outcomes
            assert outcome.name == STEM and outcome.examples
            assert len(outcomes.content_hash) == 64
            return

    assert problems
    event("refused" if plain_json else "refused, damaged")
    # One problem per line, and nothing a UTF-8 stream or the Prefect API could refuse.
    report.encode("utf-8")
    assert len(report.splitlines()) == min(len(problems), 100) + 1 + (len(problems) > 100)
    named = [field_name(key) for key in document] if isinstance(document, dict) else []
    for problem in problems:
        assert problem.file == str(path), problem
        assert problem.message.strip() and problem.fix.strip(), problem
        if plain_json:
            # Valid JSON in UTF-8: every problem is with one field, a key of the file or one it needs.
            assert any(problem.field == root or problem.field.startswith((f"{root}.", f"{root}["))
                       for root in [*named, *REQUIRED_KEYS, "(top level)"]), problem
