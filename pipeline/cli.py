"""`cvae` console script: train, generate, evaluate, run; each takes --config FILE and repeatable --set key=value."""
from __future__ import annotations

import argparse
import os
import shlex

from pipeline import console
from pipeline.config import Config, load_config
from pipeline.errors import UserError, user_error_in
from pipeline.storage import absolute_tracking_uri, redact

COMMANDS = {
    "train": "fit the CVAE with Ray Train and register it in MLflow",
    "generate": "write a conditional synthetic table from a registered model",
    "evaluate": "score a synthetic table against the real one and log the report",
    "run": "train, then generate, then evaluate: the main job",
    "inspect": "show each column's kind and format, and the rules the table's rows keep (YAML for data.rules)",
}


def train_command(config: Config, args: argparse.Namespace) -> int:
    from pipeline.train.driver import train

    if config.data.children:
        from pipeline.linked.train import train_linked

        trained = train_linked(config, args.restart).parent
    else:
        trained = train(config, args.restart)
    console.result(f"next: {next_command('generate', args, f'generate.model_uri={trained.model_uri}')}")
    console.result(where_to_look(config))
    return 0


def generate_command(config: Config, args: argparse.Namespace) -> int:
    from pipeline.generate.driver import generate

    if config.data.children:
        from pipeline.linked.generate import generate_linked

        generated = generate_linked(config, args.overwrite)
    else:
        generated = generate(config, args.overwrite)
    console.result(f"next: {next_command('evaluate', args, f'evaluate.synthetic={redact(generated.output)}')}")
    return 0


def evaluate_command(config: Config, args: argparse.Namespace) -> int:
    from pipeline.evaluate.driver import evaluate

    if config.data.children:
        from pipeline.linked.evaluate import evaluate_linked

        evaluate_linked(config)
    else:
        evaluate(config)
    console.result(where_to_look(config))
    return 0


def run_command(config: Config, args: argparse.Namespace) -> int:
    """The main job: train, then generate from the version just registered, then evaluate."""
    from pipeline.evaluate.driver import evaluate
    from pipeline.generate.driver import generate
    from pipeline.train.driver import train

    if config.data.children:
        return run_linked(config, args)
    trained = train(config, args.restart)
    if config.generate.model_uri is None:
        config = config.model_copy(update={"generate": config.generate.model_copy(update={"model_uri": trained.model_uri})})
    generated = generate(config, args.overwrite)
    evaluate(config.model_copy(update={"evaluate": config.evaluate.model_copy(update={"synthetic": generated.output})}))
    console.result(f"synthetic table: {redact(generated.output)} (Parquet parts and _manifest.json)")
    console.result(where_to_look(config))
    return 0


def run_linked(config: Config, args: argparse.Namespace) -> int:
    """The main job for linked tables (data.children): train every table, generate parents with their children,
    evaluate each table and the links against the held-out parents."""
    from pipeline.linked.evaluate import evaluate_linked
    from pipeline.linked.generate import generate_linked
    from pipeline.linked.train import train_linked

    trained = train_linked(config, args.restart)
    if config.generate.model_uri is None:
        config = config.model_copy(update={"generate": config.generate.model_copy(
            update={"model_uri": trained.parent.model_uri})})
    generated = generate_linked(config, args.overwrite)
    evaluate_linked(config.model_copy(update={"evaluate": config.evaluate.model_copy(
        update={"synthetic": generated.output})}))
    console.result(f"synthetic tables: {redact(generated.output)} (a folder of Parquet parts per table, "
                   "_manifest.json)")
    console.result(where_to_look(config))
    return 0


def inspect_command(config: Config, args: argparse.Namespace) -> int:
    from pipeline.inspection import inspect_table, report

    report(config, inspect_table(config))
    return 0


def next_command(command: str, args: argparse.Namespace, setting: str) -> str:
    """The command to run next, as the user can paste it from the same directory: their --config and every --set
    they gave (tracking URI, storage, data path, output: the next stage must look where this one wrote), then
    `setting` (it wins over an earlier --set of the same key), quoted for a POSIX shell."""
    words = ["cvae", command]
    if args.config:
        words += ["--config", args.config]
    key = setting.partition("=")[0]
    for override in args.overrides:
        if override.partition("=")[0].strip() != key:
            words += ["--set", redact(override)]
    words += ["--set", setting]
    return shlex.join(words)


def where_to_look(config: Config) -> str:
    """The last line of a stage: how to browse its runs, metrics, report and registered model."""
    tracking = absolute_tracking_uri(config.mlflow.tracking_uri)
    if tracking.startswith(("http://", "https://")):
        return f"browse runs and models: {redact(tracking)} (experiment {config.mlflow.experiment!r})"
    return f"browse runs and models: mlflow ui --backend-store-uri {redact(tracking)}"


EPILOG = """common keys (--set KEY=VALUE, or the same keys in a --config YAML file):
  data.path=/data/peeps.parquet       the table: a Parquet file or folder (file://, s3://, gs://)
  'data.conditions=[country]'         columns to condition on (generate asks for their values)
  train.epochs=20  train.num_workers=2
  mlflow.tracking_uri=sqlite:///mlflow.db  mlflow.model_name=peeps
  generate.num_rows=100000  generate.output=./out/peeps   (default ./runs/synthetic/NAME-vVERSION)

example:
  cvae inspect --set data.path=/data/peeps.parquet
  cvae run --set data.path=/data/peeps.parquet --set 'data.conditions=[country]'

every key, its default and meaning: docs/configuration.md (configs/adult.yaml writes out all defaults)"""


HANDLERS = {"train": train_command, "generate": generate_command, "evaluate": evaluate_command, "run": run_command,
            "inspect": inspect_command}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cvae", description="Conditional synthetic data at cluster scale.",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded default)")
        command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                             help="override one dotted key, value parsed as YAML (repeatable)")
        if name in ("generate", "run"):
            command.add_argument("--overwrite", action="store_true",
                                 help="replace a different synthetic dataset already at generate.output")
        if name in ("train", "run"):
            command.add_argument("--restart", action="store_true",
                                 help="discard the checkpoints of another job under the same train.name and start over")
        command.add_argument("--verbose", action="store_true",
                             help=f"also show Ray's and MLflow's own output (or set {console.VERBOSE_ENV}=1); "
                                  "without it they go to Ray's log files only")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console.configure(args.verbose)
    try:
        config = load_config(args.config, args.overrides, conditions_optional=args.command == "inspect")
        return HANDLERS[args.command](config, args)
    except UserError as exc:
        console.error(f"cvae {args.command}: error: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - a scheduler needs one line and a non-zero exit, not a traceback
        if os.environ.get("CVAE_TRACEBACK"):
            raise
        found = user_error_in(exc)  # the data problem a Ray task or worker found, as the driver would say it
        if found is not None:
            console.error(f"cvae {args.command}: error: {found}")
            return 1
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        console.error(f"cvae {args.command}: failed: {type(exc).__name__}: {console.fitted(redact(reason), 600)} "
                      "(set CVAE_TRACEBACK=1 for the full traceback)")
        return 1
