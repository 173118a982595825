"""Labelled JSONL files (`evaluate --data`, `outcomes import`): every bad file exits 1 naming the file and the line.

Each case is read by both commands. `outcomes import` runs as a real process (it is quick to start); `evaluate`, which
imports PyTorch, runs through ``main`` in this process for every case and as a real process for one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from intentflow.checkpoint import build_payload, save_checkpoint
from intentflow.cli import main

GOOD = '{"text": "will it rain tomorrow", "label": "check_weather"}\n'


def _write(content: bytes | str) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def _huge_line(path: Path) -> None:
    with open(path, "wb") as stream:
        stream.write(b'{"text": "')
        stream.write(b"a" * 50_000_000)
        stream.write(b'", "label": "check_weather"}\n')


def _fifo(path: Path) -> None:
    os.mkfifo(path)


# (how to make the file, what the report must say after the file's name)
CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "invalid_json": (_write(GOOD + '{"text": "oops", \n'), "line 2: invalid JSON"),
    "array_line": (_write("[1, 2]\n"), "line 1: expected a JSON object"),
    "missing_text": (_write('{"label": "check_weather"}\n'), "line 1 text: missing, blank or not a string"),
    "blank_text": (_write('{"text": "  ", "label": "check_weather"}\n'), "line 1 text: missing, blank or not a string"),
    "label_a_number": (_write('{"text": "hi there", "label": 3}\n'), "line 1 label: missing, blank or not a string"),
    "label_null": (_write(GOOD + '{"text": "hi there", "label": null}\n'), "line 2 label: missing, blank"),
    "not_utf8_late": (_write(GOOD.encode() * 1000 + b'{"text": "caf\xe9", "label": "x"}\n'),
                      "line 1001: is not valid UTF-8 (byte 14 of the line)"),
    "utf16": (_write(GOOD.encode("utf-16")), "line 1: is not valid UTF-8"),
    "empty": (_write(""), "holds no rows"),
    "blank_lines_only": (_write("\n  \n\t\n"), "holds no rows"),
    "missing": (lambda path: None, "the file does not exist"),
    "a_folder": (lambda path: path.mkdir(), "is not a regular file"),
    "fifo": (_fifo, "is not a regular file"),
    "line_of_50_mb": (_huge_line, "line 1: is longer than 100,000 bytes"),
    "nested_deep": (_write('{"text": ' + "[" * 5000 + "]" * 5000 + "}\n"), "line 1: invalid JSON: nested too deeply"),
    "number_of_5000_digits": (_write('{"text": "hi", "label": ' + "1" * 5000 + "}\n"),
                              "line 1: holds a number with thousands of digits"),
    "unpaired_surrogate": (_write('{"text": "hi", "label": "\\ud800"}\n'),
                           "line 1 label: holds an unpaired surrogate escape"),
    "repeated_key": (_write('{"text": "hi", "text": "ho", "label": "check_weather"}\n'),
                     "line 1 text: is given twice in one object"),
}


@pytest.fixture(scope="module")
def checkpoint(toy_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = toy_model.data
    payload = build_payload(toy_model.trained, outcome_hash=toy_model.outcomes.content_hash, prepare={},
                            val_texts=[row.text for row in data.val], val_labels=[row.label for row in data.val])
    return save_checkpoint(payload, tmp_path_factory.mktemp("labelled") / "model.pt")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("labelled-files")
    made = {}
    for case, (make, _) in CASES.items():
        made[case] = root / f"{case}.jsonl"
        make(made[case])
    return made


def run_main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def report_problems(case: str, code: int, out: str, err: str, path: Path) -> list[str]:
    expected = f"{path.name}: {CASES[case][1]}"
    if code != 1 or not err.startswith("error: ") or "Traceback" in err or expected not in err:
        return [f"{case}: exit {code}, expected {expected!r}\nstdout: {out[-500:]}\nstderr: {err[-2000:]}"]
    return []


def test_evaluate_refuses_every_bad_file_naming_file_and_line(files: dict[str, Path], checkpoint: Path) -> None:
    failures = []
    for case, path in files.items():
        code, out, err = run_main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(path)])
        failures += report_problems(case, code, out, err, path)
    assert not failures, "\n\n".join(failures)


def test_evaluate_as_a_process_reports_without_traceback(files: dict[str, Path], checkpoint: Path) -> None:
    path = files["not_utf8_late"]
    result = subprocess.run([sys.executable, "-m", "intentflow.cli", "evaluate", "--checkpoint", str(checkpoint),
                             "--data", str(path)], capture_output=True, text=True, timeout=120)
    assert not report_problems("not_utf8_late", result.returncode, result.stdout, result.stderr, path)


def test_outcomes_import_refuses_every_bad_file_and_writes_nothing(files: dict[str, Path], tmp_path: Path) -> None:
    def run(case: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "intentflow.cli", "outcomes", "import", str(files[case]),
                               "--out", str(tmp_path / case)], capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(CASES, pool.map(run, CASES), strict=True))
    failures = []
    for case, result in results.items():
        failures += report_problems(case, result.returncode, result.stdout, result.stderr, files[case])
    assert not failures, "\n\n".join(failures)
    assert not list(tmp_path.iterdir()), "a refused import wrote outcome files"


def test_a_byte_order_mark_is_allowed_at_the_start(tmp_path: Path, checkpoint: Path) -> None:
    data = tmp_path / "bom.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() * 2)

    code, out, err = run_main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--json"])

    assert (code, err) == (0, ""), err
    assert json.loads(out)["samples"] == 2


def test_at_most_fifty_bad_lines_are_reported(tmp_path: Path, checkpoint: Path) -> None:
    data = tmp_path / "many.jsonl"
    data.write_text("[]\n" * 10_000, encoding="utf-8")

    code, _, err = run_main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data)])

    assert code == 1
    assert err.startswith("error: 50 problems found:")
    assert "line 50: expected a JSON object" in err


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file under ``root`` with its content (a link: where it points), links not followed."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


def test_import_writes_only_inside_its_out_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "pay_bill.json").write_text("not to be touched", encoding="utf-8")
    out = tmp_path / "deep" / "outcomes"
    out.mkdir(parents=True)
    # A link where an imported file will go, leading outside: replacing the file must replace the link, not write
    # through it.
    (out / "pay_bill.json").symlink_to(outside / "pay_bill.json")
    labels = ["../../evil", "a/b", "/etc/passwd", "..\\..\\win", ".hidden", "pay_bill", "x" * 500]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"text": f"utterance number {index}", "label": label}) + "\n"
                              for index, label in enumerate(labels)), encoding="utf-8")
    before = {path: content for path, content in tree(tmp_path).items() if not path.startswith("deep")}

    code, out_text, err = run_main(["outcomes", "import", str(source), "--out", str(out), "--overwrite"])

    assert code == 0, err
    after = tree(tmp_path)
    assert {path: content for path, content in after.items() if not path.startswith("deep")} == before
    written = sorted(path.removeprefix("deep/outcomes/") for path in after if path.startswith("deep"))
    assert all("/" not in name and name.endswith(".json") and not name.startswith(".") for name in written), written
    assert not (out / "pay_bill.json").is_symlink()
    assert (outside / "pay_bill.json").read_text(encoding="utf-8") == "not to be touched"
    assert f"wrote {len(written)} outcome files" in out_text


def test_golden_set_problems_name_the_file_line_even_after_blank_lines(tmp_path, toy_folder):
    from intentflow.errors import ValidationFailed
    from intentflow.golden import load_golden
    from intentflow.outcomes import load_outcomes

    golden = tmp_path / "evaluation"
    golden.mkdir()
    (golden / "a.jsonl").write_text('{"text": "is it hot out", "label": "check_weather"}\n\n\n'
                                    '{"text": "Wake me at seven", "label": "set_alarm"}\n', encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        load_golden(golden, load_outcomes(toy_folder))
    [problem] = info.value.problems
    assert problem.field == "line 4: text" and problem.file.endswith("a.jsonl")
