"""``editserve edit <method>`` and ``editserve fit <method>``, generated from the specs.

Each parameter of the method becomes an option (``--t-edit 0``; its type, choices and
help from the parameter's JSON schema), each image role an option taking a path
(``--content a.png``), each list of image ids a repeatable path option
(``--positives a.png --positives b.png``). An option left out is not sent, so the
model's editing defaults apply. ``--param key=value`` sets any parameter by its API
name (JSON values). Through the service by default; ``--local`` runs the engine here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from cli.client import parse_value
from contract.jobs import JobKind
from contract.methods import METHODS
from contract.spec import MethodSpec, publish_defaults

# options every method command has; a parameter of the same name keeps the API's name only
COMMON = {"model", "seed", "out", "local", "device", "dtype", "url", "api_key", "param",
          "no_wait", "idempotency_key"}  # fmt: skip


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"true or false, got {text!r}")


def _option(name: str, prop: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """argparse keywords for one parameter, and its help text."""
    alternatives = prop.get("anyOf", [prop])
    kinds = [a for a in alternatives if a.get("type") != "null"]
    kind = kinds[0] if kinds else prop
    help_text = prop.get("description", "")
    if kind.get("type") == "array":
        return {"action": "append", "metavar": name.upper()}, help_text
    if "enum" in kind:
        return {"choices": kind["enum"], "type": type(kind["enum"][0])}, help_text
    types: dict[str, Callable[[str], Any]] = {"integer": int, "number": float, "boolean": _bool}
    return {"type": types.get(kind.get("type", ""), str), "metavar": "V"}, help_text


def add_method_options(p: argparse.ArgumentParser, spec: MethodSpec) -> None:
    """The spec's image roles, image lists and parameters as options of ``p``."""
    group = p.add_argument_group(f"{spec.name}: images (paths)")
    for role in spec.inputs:
        group.add_argument(f"--{role}", dest=f"input.{role}", required=True, metavar="PATH")
    for role in spec.optional_inputs:
        group.add_argument(f"--{role}", dest=f"input.{role}", metavar="PATH")
    params = p.add_argument_group(f"{spec.name}: parameters (left out: the model's default)")
    schema = publish_defaults(spec.params.model_json_schema())
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        keywords, help_text = _option(name, prop)
        if name in spec.image_list_params:
            keywords, help_text = {"action": "append", "metavar": "PATH"}, f"{help_text} (paths)"
        flag = f"--{name.replace('_', '-')}" if name not in COMMON else f"--{name}-param"
        params.add_argument(flag, dest=f"param.{name}", required=name in required,
                            help=help_text.replace("%", "%%"), **keywords)  # fmt: skip


def collect(args: argparse.Namespace, spec: MethodSpec) -> tuple[dict[str, str], dict[str, Any]]:
    """({role: path}, params) the command line gave; paths of image lists stay paths."""
    inputs, params = {}, {}
    for key, value in vars(args).items():
        if value is None:
            continue
        if key.startswith("input."):
            inputs[key.removeprefix("input.")] = value
        elif key.startswith("param."):
            params[key.removeprefix("param.")] = value
    params.update(parse_params(args.param))
    return inputs, params


def parse_params(items: list[str]) -> dict[str, Any]:
    """``--param key=value`` items by the API's names, the values read as JSON."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--param wants key=value, got {item!r}")
        params[key] = parse_value(value)
    return params


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
    client_args: Callable[[argparse.ArgumentParser], None],
) -> None:
    """``edit`` and ``fit``, with one subcommand per method of that kind."""
    for kind, verb, what in ((JobKind.EDIT, "edit", "an edit"), (JobKind.FIT, "fit", "a fit")):
        cmd = sub.add_parser(verb, help=f"run {what}: through the service, or --local")
        methods = cmd.add_subparsers(dest="method", required=True, metavar="METHOD")
        for spec in METHODS.values():
            if spec.kind is not kind:
                continue
            p = methods.add_parser(spec.name, help=spec.summary, description=spec.summary)
            p.add_argument(
                "--model", required=True,
                help="a model the service holds; with --local, a folder or hub id",
            )  # fmt: skip
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--out", default=".",
                           help="a .png file (one output) or a folder (default: here); a fit "
                           "with --local writes its asset as <out>/<name>.safetensors")  # fmt: skip
            p.add_argument("--param", action="append", default=[],
                           help="key=value by the API's name (JSON values)")  # fmt: skip
            p.add_argument("--local", action="store_true",
                           help="run the engine in this process (no service); an asset "
                           "parameter then takes a .safetensors path")  # fmt: skip
            p.add_argument("--device", default="auto", help="--local: cpu, cuda, auto")
            p.add_argument("--dtype", default="auto", help="--local: auto, float32, float16")
            p.add_argument("--no-wait", action="store_true", help="print the job id and return")
            p.add_argument("--idempotency-key")
            client_args(p)
            add_method_options(p, spec)
            p.set_defaults(handler=run, spec=spec)


def describe_outputs(metrics: dict[str, Any], asset: str | None = None) -> str:
    return json.dumps({"asset": asset, "metrics": metrics} if asset else metrics)
