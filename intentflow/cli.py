"""The ``intentflow`` command line. Core commands never import Prefect; orchestration commands do, lazily."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from intentflow.errors import IntentflowError

DEFAULT_OUTCOMES = "config/outcomes"
DEFAULT_REGISTRY = "artifacts"
LOCATION_HELP = ("checkpoint file or registry (a folder, or a URL such as s3://bucket/prefix: its production "
                 "version); URLs read through fsspec, S3 configured by AWS_ENDPOINT_URL and the AWS credential "
                 "variables")
REGISTRY_HELP = ("registry folder, or s3://bucket/prefix (needs intentflow[s3]; AWS_ENDPOINT_URL and the AWS "
                 "credential variables configure it)")

def _layer_list(text: str) -> list[int]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of layer numbers, e.g. 4 or "
                                         "2,4, or none") from None


def _threshold(text: str) -> str | float:
    if text in ("auto", "off"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, off or a number from 0 to 1") from None


def _shown(value: Any) -> str:
    """A default as its flag is written: on/off, a comma list or none, empty."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value) if value != "" else "empty"


def _setting_flags(sections: tuple[str, ...]) -> dict[str, tuple[Any, str]]:
    """``{name: (argparse type, help)}`` of every setting in ``sections``, built from the settings models
    (``intentflow.config.flat_settings``): a setting is added there once and every command that can honour it
    takes it as a flag. The defaults stated are the code's, which equal config/training.toml's (a test holds)."""
    from typing import Literal, get_args, get_origin

    from intentflow.config import Settings, featurizer_of, flat_settings

    flags: dict[str, tuple[Any, str, str | None]] = {}
    for name, (places, annotation, info) in flat_settings(Settings()).items():
        if not any(section in sections for section, _ in places):
            continue
        kind: Any = annotation
        if get_origin(annotation) is Literal:
            kind = ("choices", list(get_args(annotation)))
        elif name == "embedding_layers":
            kind = _layer_list
        elif name in ("oos_threshold", "oos_similarity"):
            kind = _threshold
        flags[name] = (kind, f"{info.description} (default {_shown(info.default)})", featurizer_of(info))
    return flags


PREPARE_FLAGS = _setting_flags(("prepare",))
TRAIN_FLAGS = _setting_flags(("train",))
# A retrain run honours every setting: preparation, training, incremental runs, the gate, publishing.
RETRAIN_FLAGS = _setting_flags(("prepare", "train", "incremental", "gate", "publish"))


# --help lists the settings of one featurizer under its own heading.
FLAG_GROUPS = {"bow": "bag-of-words settings", "embeddings": "embeddings settings"}


def _add_flags(parser: argparse.ArgumentParser, flags: dict[str, tuple[Any, str, str | None]]) -> None:
    groups: dict[str | None, Any] = {None: parser}
    groups.update({featurizer: parser.add_argument_group(title) for featurizer, title in FLAG_GROUPS.items()
                   if any(group == featurizer for _, _, group in flags.values())})
    for name, (kind, help_text, featurizer) in flags.items():
        target = groups[featurizer]
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            target.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif isinstance(kind, tuple):
            target.add_argument(flag, dest=name, choices=kind[1], default=None, help=help_text)
        else:
            target.add_argument(flag, dest=name, type=kind, default=None, help=help_text)


def _location(text: str) -> Path | str:
    """A path, or an object-store URL kept as it is (``Path`` would fold ``s3://`` into ``s3:/``)."""
    from intentflow.storage import is_url

    return text if is_url(text) else Path(text)


def _add_evaluation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--evaluation", type=Path, default=None,
                        help="golden-set folder: *.jsonl of labelled real utterances no model trains on (default: "
                             "the folder evaluation beside the outcomes folder, config/evaluation, when present)")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="settings file (default: config/training.toml when present)")


def _settings(args: argparse.Namespace, flags: dict[str, tuple[Any, str]]) -> Any:
    """The settings file with the command's flags that were given."""
    from intentflow.config import apply_flat, load_settings

    given = {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}
    return apply_flat(load_settings(args.config), given)


def cmd_validate(args: argparse.Namespace) -> int:
    from intentflow.golden import golden_folder, load_golden
    from intentflow.outcomes import load_outcomes

    outcomes = load_outcomes(args.outcomes)
    for warning in outcomes.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = outcomes.summary()
    print(f"ok: {summary['outcomes']} outcomes, {summary['originals']} originals "
          f"({summary['examples']} examples, {summary['teach_hints']} teach hints), "
          f"{summary['synonyms']} synonym phrases; content hash {outcomes.content_hash[:12]}")
    golden = load_golden(golden_folder(args.outcomes, args.evaluation), outcomes)
    if golden is not None:
        shown = golden.to_dict()
        print(f"ok: golden set {golden.folder}: {shown['rows']} sentences, {shown['out_of_scope']} of them out of "
              "scope, none in an outcome file")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from intentflow.dataset import prepare_data, write_prepared
    from intentflow.outcomes import load_outcomes

    settings = _settings(args, PREPARE_FLAGS)
    outcomes = load_outcomes(args.outcomes)
    data = prepare_data(outcomes, settings.prepare)
    write_prepared(data, args.out)
    manifest = data.manifest
    print(f"wrote {args.out}: {manifest['rows']['train']} train rows, {manifest['rows']['val']} validation rows, "
          f"{len(manifest['labels'])} outcomes (seed {settings.prepare.seed})")
    for label, made in manifest["shortfalls"].items():
        print(f"note: {label}: {made} unique synthetic sentences of {settings.prepare.augment_factor} asked",
              file=sys.stderr)
    for label in manifest["leaky_labels"]:
        print(f"note: {label} has one original, so its validation rows paraphrase training rows (leaky)",
              file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from intentflow.config import resolve_featurizer
    from intentflow.pipeline import train_from_data

    settings, picked = resolve_featurizer(_settings(args, TRAIN_FLAGS))
    if picked:
        print(picked, file=sys.stderr)
    with _progress() as on_epoch:
        payload = train_from_data(args.data, settings.train, args.checkpoint, on_epoch=on_epoch)
    metrics = payload["metrics"]
    print(f"wrote {args.checkpoint}: validation accuracy {_pct(metrics['val_accuracy'])}, "
          f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']} run on {metrics['device']}")
    if metrics.get("refit"):
        print(f"then refit on all {metrics['refit']['rows']} rows for {metrics['refit']['epochs']} epochs; the "
              "accuracy above is the held-out run's")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from intentflow.checkpoint import held_out_path
    from intentflow.dataset import read_labelled
    from intentflow.errors import display_path
    from intentflow.evaluate import OOS_LABELS, align_labels, evaluate_model
    from intentflow.golden import golden_folder, load_golden
    from intentflow.inference import Classifier
    from intentflow.registry import resolve_checkpoint
    from intentflow.storage import is_file

    classifier = Classifier.load(args.checkpoint)
    oos_labels = args.oos_label
    golden = None
    if args.data is not None and args.validation:
        raise IntentflowError("pass --data FILE or --validation, not both")
    if args.data is None and not args.validation:
        golden = load_golden(golden_folder(DEFAULT_OUTCOMES, args.evaluation), unknown_label=classifier.unknown_label)
    unknown = sorted({label for label in golden.labels if label not in golden.oos_labels} - set(classifier.labels)
                     ) if golden is not None else []
    if unknown and args.evaluation is not None:
        raise IntentflowError(f"the golden set {golden.folder} has labels this model does not know: "
                              f"{', '.join(unknown[:10])} (fix: pass the model's own golden set with --evaluation, "
                              "--data FILE, or --validation for its recorded validation set)")
    note = ""
    if unknown:
        # The golden set found by default belongs to other outcomes (another model's checkpoint was named).
        note = f" (the golden set {golden.folder} is for other outcomes, e.g. {unknown[0]})"
        golden = None
    if args.data is not None:
        texts, labels, _ = read_labelled(args.data)
        source = str(args.data)
        out_of_scope = [*(oos_labels or OOS_LABELS), classifier.unknown_label]
        labels, unmatched = align_labels(labels, classifier.labels, out_of_scope)
        if unmatched and len(unmatched) == len({label for label in labels if label not in out_of_scope}):
            known = ", ".join(classifier.labels[:10]) + (" ..." if len(classifier.labels) > 10 else "")
            raise IntentflowError(f"{display_path(args.data)}: no label matches an outcome of the model "
                                  f"({', '.join(unmatched[:10])}{' ...' if len(unmatched) > 10 else ''}; the model "
                                  f"knows {known}) (fix: pass the model trained on these outcomes, or data labelled "
                                  "with its outcome names; --oos-label names out-of-scope labels)")
    elif golden is not None:
        texts, labels = list(golden.texts), list(golden.labels)
        oos_labels = oos_labels or list(golden.oos_labels)
        source = f"the golden set in {golden.folder} ({len(texts)} sentences no model trains on)"
    else:
        # The validation set recorded in the checkpoint is honest only for a model that never learnt it: the
        # held-out model a refit version keeps beside the one it serves.
        held_out = held_out_path(resolve_checkpoint(args.checkpoint))
        has_held_out = is_file(held_out)
        if has_held_out:
            classifier = Classifier.load(held_out)
        recorded = classifier.payload.get("validation", {})
        texts, labels = list(recorded.get("text", [])), list(recorded.get("label", []))
        source = "the validation set recorded in the checkpoint" + note
        if has_held_out:
            source += f", scored with the held-out model it was judged as ({display_path(held_out)})"
        elif classifier.payload.get("metrics", {}).get("refit"):
            source += (" (this model was refit on it, so this is not held-out accuracy; the held-out run scored "
                       f"{_pct(classifier.payload['metrics'].get('val_accuracy'))})")
        if not texts:
            raise IntentflowError("the checkpoint records no validation set (fix: pass --data FILE.jsonl)")
    evaluation = evaluate_model(classifier, texts, labels, **({"oos_labels": oos_labels} if oos_labels else {}))
    if args.json:
        print(json.dumps({"data": source, **evaluation.to_dict()}, indent=2))
    else:
        from intentflow.report import evaluation_text

        print(evaluation_text(evaluation, source))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from intentflow.inference import Classifier

    texts = list(args.texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise IntentflowError("no text to classify (fix: pass sentences as arguments or on standard input)")
    classifier = Classifier.load(args.checkpoint)
    predictions = classifier.predict_batch(texts)
    for text, (label, confidence) in zip(texts, predictions, strict=True):
        if args.json:
            print(json.dumps({"text": text, "label": label, "confidence": confidence}))
        else:
            print(f"{text} -> {label} {confidence:.2%}")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from intentflow.onnx_export import export_onnx, metadata_path, tokenizer_path

    path = export_onnx(args.checkpoint, args.out, int8=args.int8)
    if json.loads(metadata_path(path).read_text(encoding="utf-8")).get("kind") == "embeddings":
        print(f"wrote {path}, {tokenizer_path(path)} (the encoder's tokenizer) and {metadata_path(path)} (labels "
              "and out-of-scope threshold)")
    else:
        print(f"wrote {path} and {metadata_path(path)} (vocabulary, labels and n-gram size for featurizing)")
    return 0


def _prefect_environment() -> None:
    # Before Prefect is imported: no analytics, no tracking, wherever the CLI starts a server.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The embedded server's 20 s default start-up limit is too short on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Core modules log through the standard library; this shows their lines in the Prefect UI too.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "intentflow")


def cmd_retrain(args: argparse.Namespace) -> int:
    _prefect_environment()
    from flows.server import TemporaryServer

    # Without a configured server, Prefect's temporary one boots while this process imports torch and the flow.
    server = TemporaryServer.start()
    try:
        from prefect import tags

        from flows.retrain import RetrainParameters, retrain

        # Every flag is a field of the flow's parameters (both are built from the settings models).
        overrides = {name: getattr(args, name) for name in RETRAIN_FLAGS if getattr(args, name, None) is not None}
        try:
            params = RetrainParameters(outcomes=str(args.outcomes), registry=str(args.registry),
                                       evaluation=str(args.evaluation or ""), config=str(args.config or ""),
                                       force=args.force, mode=args.mode, **overrides)
        except ValueError as error:
            raise IntentflowError(f"invalid retrain option: {error}") from None
        if server is None:
            _check_server()
        with server.serving() if server is not None else contextlib.nullcontext(), tags("intentflow", "manual"):
            state = retrain(params, return_state=True)
    finally:
        if server is not None:
            server.stop()
    message = state.message or state.name
    print(message, file=sys.stdout if state.is_completed() else sys.stderr)
    return 0 if state.is_completed() else 1


def cmd_teach(args: argparse.Namespace) -> int:
    from intentflow.errors import display_path
    from intentflow.teach import Correction, read_corrections, teach_utterances

    if args.file is not None:
        if args.text is not None or args.outcome is not None:
            raise IntentflowError("pass either an utterance with --outcome or --file, not both "
                                  "(fix: put every correction in the file)")
        corrections = read_corrections(args.file)
    elif args.text is None or args.outcome is None:
        raise IntentflowError('teach needs an utterance and its outcome (fix: intentflow teach "the utterance" '
                              "--outcome NAME, or --file corrections.jsonl)")
    else:
        corrections = [Correction(args.text, args.outcome)]
    summary = teach_utterances(args.outcomes, corrections, create=args.create)
    for name in summary.created:
        print(f"created {display_path(args.outcomes / (name + '.json'))}")
    for item in summary.taught:
        print(f"taught '{item.text}' -> {item.label} ({display_path(item.file)} {item.field})")
    count, outcomes = len(summary.taught), len(summary.outcomes)
    print(f"ok: {count} utterance{'s' if count != 1 else ''} taught to {outcomes} outcome{'s' if outcomes != 1 else ''}"
          "; a running `intentflow watch` triggers a retrain, or run `intentflow retrain`")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    from intentflow.registry import open_registry

    registry = open_registry(args.registry)
    versions = registry.versions()
    if args.json:
        print(json.dumps([{"version": v.name, "status": registry.status(v), **v.info} for v in versions], indent=2))
        return 0
    if not versions:
        print(f"no versions in {args.registry}")
        return 0
    # Both accuracies are on sentences the version never learnt: its held-out model on the validation set, the
    # served model on the golden set (config/evaluation).
    print(f"{'version':<28} {'status':<11} {'held-out':>8} {'golden':>8} {'macro-F1':>8}  {'outcomes':>8}  created")
    for version in versions:
        info = version.info
        golden = (info.get("golden") or {}).get("accuracy")
        shown = "-" if golden is None else f"{golden:.4f}"
        print(f"{version.name:<28} {registry.status(version):<11} {info.get('val_accuracy', 0):>8.4f} "
              f"{shown:>8} {info.get('macro_f1', 0):>8.4f}  "
              f"{len(info.get('labels', [])):>8}  {info.get('created_at', '')}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from intentflow.registry import open_registry

    event = open_registry(args.registry).rollback(to=args.to, why=args.why)
    print(f"production is now {event['version']} (was {event['previous']}); recorded in history")
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    _prefect_environment()
    from flows.notify import changed_outcome_files, send_change
    from flows.watch import require_server

    paths = changed_outcome_files(args.outcomes, args.since)
    if not paths:
        print(f"no outcome file in {args.outcomes} changed since {args.since}; no event sent")
        return 0
    url = require_server()
    payload = send_change(args.outcomes, args.since, paths)
    state = f"content hash {payload['content_hash'][:12]}" if payload["valid"] else "the outcomes are invalid"
    print(f"sent intentflow.outcomes.changed to {url} for {len(paths)} file(s): {', '.join(paths)} ({state})")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    _prefect_environment()
    from flows.watch import require_server, watch_outcomes

    url = require_server()
    print(f"watching {args.outcomes} for outcome changes; events go to {url} (Ctrl-C stops)", file=sys.stderr)
    watch_outcomes(args.outcomes, quiet=args.quiet_seconds)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    _prefect_environment()
    from prefect import serve

    from flows.deployments import runner_deployments

    _check_server()
    # Every deployment of prefect.yaml (the monthly retrain with its trigger, the nightly benchmark), one process.
    serve(*runner_deployments())
    return 0


def _check_server() -> None:
    """With PREFECT_API_URL set, a server that is down or refuses this client's credentials is reported here, in a
    line, instead of as Prefect's traceback from inside the run."""
    from prefect.settings import PREFECT_API_URL

    from flows.watch import require_server

    if PREFECT_API_URL.value():
        require_server()


def cmd_outcomes_import(args: argparse.Namespace) -> int:
    from intentflow.importer import import_outcomes

    summary = import_outcomes(args.file, args.out, per_label=args.per_label, seed=args.seed,
                              text_column=args.text_column, label_column=args.label_column, overwrite=args.overwrite,
                              on_conflict=args.on_conflict)
    for note in summary.skipped[:20]:
        print(f"skipped {note}", file=sys.stderr)
    if len(summary.skipped) > 20:
        print(f"skipped {len(summary.skipped) - 20} more", file=sys.stderr)
    if summary.duplicates:
        print(f"dropped {summary.duplicates} repeated sentence{'s' if summary.duplicates != 1 else ''} (the same "
              "text under the same label, case and spaces aside)", file=sys.stderr)
    kept = "kept under the first label only" if args.on_conflict == "first" else "kept under neither"
    for text, labels in summary.conflicts[:20]:
        print(f"conflict: '{text}' is under {', '.join(repr(label) for label in labels)}: {kept}", file=sys.stderr)
    if len(summary.conflicts) > 20:
        print(f"conflict: {len(summary.conflicts) - 20} more sentences under two labels: {kept}", file=sys.stderr)
    if summary.conflicts and args.on_conflict == "drop":
        print("note: pass --on-conflict first to keep each under the first label that has it", file=sys.stderr)
    renamed = {name: label for name, label in summary.labels.items() if name != label}
    for name, label in sorted(renamed.items())[:20]:
        print(f"label {label!r} -> outcome {name}", file=sys.stderr)
    print(f"wrote {len(summary.written)} outcome files with {summary.examples} examples to {args.out}")
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


class _progress:
    """A progress bar on a terminal; plain per-epoch log lines otherwise."""

    def __enter__(self) -> Callable | None:
        if not sys.stderr.isatty():
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.description}"), transient=True)
        self.bar.start()
        self.task = self.bar.add_task("", total=None)

        def on_epoch(stats: Any, total: int) -> None:
            val = f" val acc {stats.val_accuracy:.3f}" if stats.val_accuracy is not None else ""
            self.bar.update(self.task, completed=stats.epoch, total=total,
                            description=f"loss {stats.train_loss:.4f}{val}")

        return on_epoch

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "bar"):
            self.bar.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intentflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch and step")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check the outcome files and the golden set, reporting every "
                                   "problem")
    validate.add_argument("--outcomes", type=Path, default=Path(DEFAULT_OUTCOMES))
    _add_evaluation(validate)
    validate.set_defaults(handler=cmd_validate)

    prepare = commands.add_parser("prepare", help="augment and split outcomes into train/val JSONL")
    prepare.add_argument("--outcomes", type=Path, default=Path(DEFAULT_OUTCOMES))
    prepare.add_argument("--out", type=Path, default=Path("data"))
    _add_flags(prepare, PREPARE_FLAGS)
    _add_config(prepare)
    prepare.set_defaults(handler=cmd_prepare)

    train = commands.add_parser("train", help="train a checkpoint from prepared data")
    train.add_argument("--data", type=Path, default=Path("data"))
    train.add_argument("--checkpoint", type=Path, required=True)
    _add_flags(train, TRAIN_FLAGS)
    _add_config(train)
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a checkpoint (or a registry's production model)")
    evaluate.add_argument("--checkpoint", type=_location, required=True, help=LOCATION_HELP)
    evaluate.add_argument("--data", type=Path, default=None, help='labelled JSONL ({"text","label"} per line); '
                          "default: the golden set, or without one the validation set recorded in the checkpoint")
    _add_evaluation(evaluate)
    evaluate.add_argument("--validation", action="store_true",
                          help="score the validation set recorded in the checkpoint, with the held-out model the "
                               "version was judged as where it keeps one")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--oos-label", action="append", default=None,
                          help="label of out-of-scope rows in --data, for out-of-scope recall (default: oos, "
                               "out_of_scope and the model's unknown label); repeatable")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser("predict", help="label and confidence for each text")
    predict.add_argument("--checkpoint", type=_location, required=True, help=LOCATION_HELP)
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument("texts", nargs="*", help="sentences (default: one per line on standard input)")
    predict.set_defaults(handler=cmd_predict)

    export_onnx = commands.add_parser("export-onnx", help="write a checkpoint as ONNX plus the files inference needs")
    export_onnx.add_argument("--checkpoint", type=_location, required=True, help=LOCATION_HELP)
    export_onnx.add_argument("--out", type=Path, required=True,
                             help="ONNX file to write; OUT.json (and an embeddings model's tokenizer) beside it")
    export_onnx.add_argument("--int8", action="store_true",
                             help="an embeddings model's sentence encoder with 8-bit weights: faster on a CPU, a "
                                  "little less accurate (benchmarks/RESULTS.md; default: float32, PyTorch's answers)")
    export_onnx.set_defaults(handler=cmd_export_onnx)

    outcomes = commands.add_parser("outcomes", help="work with outcome files")
    outcome_commands = outcomes.add_subparsers(dest="outcomes_command", required=True, metavar="COMMAND")
    importer = outcome_commands.add_parser("import", help="write one outcome file per label of a JSONL or CSV file")
    importer.add_argument("file", type=Path, help='JSONL ({"text","label"} per line) or CSV with a header')
    importer.add_argument("--out", type=Path, required=True, help="outcomes folder to write")
    importer.add_argument("--per-label", type=int, default=None, help="examples per outcome (default: all)")
    importer.add_argument("--seed", type=int, default=0, help="which examples are chosen, reproducibly")
    importer.add_argument("--text-column", default="text")
    importer.add_argument("--label-column", default="label")
    importer.add_argument("--overwrite", action="store_true", help="replace outcome files that exist")
    importer.add_argument("--on-conflict", choices=["drop", "first"], default="drop",
                          help="a sentence under two labels: keep it under neither (drop, the default) or under "
                               "the first label that has it")
    importer.set_defaults(handler=cmd_outcomes_import)

    retrain = commands.add_parser("retrain", help="run the Prefect retrain flow once (the main job)")
    retrain.add_argument("--outcomes", type=Path, default=Path(DEFAULT_OUTCOMES))
    retrain.add_argument("--registry", type=_location, default=Path(DEFAULT_REGISTRY), help=REGISTRY_HELP)
    _add_evaluation(retrain)
    retrain.add_argument("--force", action="store_true", help="retrain even when production is up to date")
    retrain.add_argument("--mode", choices=["auto", "full", "incremental"], default="auto",
                         help="auto (default): incremental from production when only utterances were added, else full")
    _add_flags(retrain, RETRAIN_FLAGS)
    _add_config(retrain)
    retrain.set_defaults(handler=cmd_retrain)

    teach = commands.add_parser("teach", help="add corrected utterances to their outcomes' teach_hints (all or none)")
    teach.add_argument("text", nargs="?", default=None, help="the utterance to teach")
    teach.add_argument("--outcome", default=None, help="the outcome the utterance means")
    teach.add_argument("--file", type=Path, default=None,
                       help='JSONL of corrections, {"text": ..., "label": ...} per line, taught all or none')
    teach.add_argument("--create", action="store_true", help="create the outcome file for a new outcome name")
    teach.add_argument("--outcomes", type=Path, default=Path(DEFAULT_OUTCOMES))
    teach.set_defaults(handler=cmd_teach)

    versions = commands.add_parser("versions", help="list the registry's versions with status and accuracy")
    versions.add_argument("--registry", type=_location, default=Path(DEFAULT_REGISTRY), help=REGISTRY_HELP)
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(handler=cmd_versions)

    rollback = commands.add_parser("rollback", help="move production back (to the previous version by default)")
    rollback.add_argument("--registry", type=_location, default=Path(DEFAULT_REGISTRY), help=REGISTRY_HELP)
    rollback.add_argument("--to", default=None, help="version to serve (default: the one production replaced)")
    rollback.add_argument("--why", default="manual rollback", help="reason, recorded in the history")
    rollback.set_defaults(handler=cmd_rollback)

    watch = commands.add_parser("watch", help="emit an event to Prefect per burst of outcome-file edits")
    watch.add_argument("--outcomes", type=Path, default=Path(DEFAULT_OUTCOMES))
    watch.add_argument("--quiet-seconds", type=float, default=2.0, help="edits closer than this are one burst")
    watch.set_defaults(handler=cmd_watch)

    notify = commands.add_parser("notify", help="emit the outcome-change event for the outcome files changed since a "
                                 "git commit (for a CI job after a push)")
    notify.add_argument("--outcomes", type=Path, default=Path(DEFAULT_OUTCOMES),
                        help="outcome folder, relative to the repository root as the worker's clone has it")
    notify.add_argument("--since", required=True, help="the commit to compare with (the one before the push)")
    notify.set_defaults(handler=cmd_notify)

    serve = commands.add_parser("serve", help="serve the retrain deployment (monthly cron + outcome trigger)")
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("intentflow").setLevel(level)
    if args.command == "train" and sys.stderr.isatty() and not args.verbose:
        # The progress bar shows each epoch; the per-epoch log lines would scroll it away.
        logging.getLogger("intentflow.train").setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except IntentflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was published", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
