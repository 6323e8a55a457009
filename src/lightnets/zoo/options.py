"""The model options of every command, generated from the registered builders.

Each argument of a registered builder (``width``, ``groups``, ``shuffle``, ``dropout``
...) becomes one command-line option, typed from the builder's annotation and explained
by the ``Args:`` section of its docstring. Every command that takes a model calls
:func:`add_model_options`, so a new builder argument appears in all of them without a
CLI file changing. Options default to ``None``: an option not given keeps the chosen
model's own default (dropout, for one, differs by family), and :func:`model_kwargs`
refuses an option the chosen model does not take, listing the ones it does.
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..models import COMMON_ARGUMENTS, entry_arguments, get_entry, list_models

# Builder arguments that a command sets itself, or that only weight files set.
NOT_OPTIONS = frozenset({"padding", "in_channels"})


@dataclass
class ModelOption:
    """One builder argument as a command-line option."""

    name: str  # the builder's keyword
    kind: type  # int, float, str or bool
    choices: tuple[Any, ...] | None = None
    help: str = ""
    models: list[str] = field(default_factory=list)  # the builders that take it
    defaults: dict[str, Any] = field(default_factory=dict)  # builder -> its default

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _base_type(annotation: Any) -> tuple[type, tuple[Any, ...] | None]:
    """``float`` for ``float | None``; ``str`` with choices for a ``Literal``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        return type(values[0]), values
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _base_type(members[0])
        return str, None
    if annotation in (int, float, str, bool):
        return annotation, None
    return str, None


def docstring_arguments(function: Callable[..., Any]) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring: argument -> its text."""
    doc = inspect.getdoc(function) or ""
    match = re.search(r"^Args:\s*\n(.*?)(?:^\S|\Z)", doc + "\n", flags=re.M | re.S)
    if not match:
        return {}
    described: dict[str, str] = {}
    current = None
    for line in match.group(1).splitlines():
        item = re.match(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if item and (current is None or len(line) - len(line.lstrip()) <= 4):
            current = item.group(1)
            described[current] = item.group(2).strip()
        elif current and line.strip():
            described[current] += " " + line.strip()
    return described


def model_options() -> list[ModelOption]:
    """Every argument of every registered builder, in the order the builders list them."""
    options: dict[str, ModelOption] = {}
    builders: dict[str, Callable[..., Any]] = {}

    # The four families first, then the reference models (which take only the common
    # arguments), then the task models built on them, so the help lists options in the
    # order a reader meets them.
    def order(name: str) -> tuple[bool, bool, str]:
        entry = get_entry(name)
        in_zoo = entry.builder.__module__.startswith("lightnets.models.")
        return (not in_zoo, entry.family == "reference", name)

    names = sorted(list_models(), key=order)
    for name in names:
        builder = get_entry(name).builder
        builders.setdefault(builder.__name__, builder)
    for builder_name, builder in builders.items():
        hints = typing.get_type_hints(builder)
        described = docstring_arguments(builder) | COMMON_ARGUMENTS
        for parameter in inspect.signature(builder).parameters.values():
            if parameter.name in NOT_OPTIONS or parameter.kind is parameter.VAR_KEYWORD:
                continue
            kind, choices = _base_type(hints.get(parameter.name, str))
            option = options.setdefault(parameter.name, ModelOption(parameter.name, kind, choices))
            if choices and option.choices != choices:
                option.choices = tuple(dict.fromkeys((option.choices or ()) + choices))
            if not option.help and described.get(parameter.name):
                option.help = described[parameter.name]
            option.models.append(builder_name)
            option.defaults[builder_name] = parameter.default
    return list(options.values())


def _help_text(option: ModelOption) -> str:
    by_value: dict[str, list[str]] = {}
    for model, value in option.defaults.items():
        by_value.setdefault(repr(value), []).append(model)
    # The most common default first, then the models that differ from it.
    values = sorted(by_value, key=lambda v: -len(by_value[v]))
    default = f"default {values[0]}" + "".join(f"; {v} for {', '.join(by_value[v])}" for v in values[1:])
    takers = ", ".join(option.models) if len(option.models) < 6 else "every model"
    text = option.help or option.name.replace("_", " ")
    return f"{text} ({takers}; {default})".replace("%", "%%")


def add_model_options(parser: argparse.ArgumentParser, title: str = "model options") -> None:
    """Add one option per builder argument to ``parser``, in a group of their own.

    Every option defaults to ``None`` (not given), so :func:`model_kwargs` passes on
    only what the user asked for.
    """
    group = parser.add_argument_group(
        title, "the arguments of the registered builders; each model takes its own (lightnets list)"
    )
    for option in model_options():
        if option.kind is bool:
            group.add_argument(
                option.flag,
                dest=option.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_help_text(option),
            )
        else:
            group.add_argument(
                option.flag,
                dest=option.name,
                type=option.kind,
                choices=option.choices,
                default=None,
                metavar=option.name.upper() if option.choices is None else None,
                help=_help_text(option),
            )


def given_model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model options present in ``args`` with a value (given on the command line)."""
    names = (option.name for option in model_options())
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def model_kwargs(args: argparse.Namespace, model: str | None) -> dict[str, Any]:
    """The builder arguments the user gave for ``model``; refuses any it does not take.

    With ``model`` ``None`` (not known yet, e.g. read from the weights later) the given
    options are returned unchecked; :func:`lightnets.create_model` checks them then.
    """
    given = given_model_options(args)
    if model is not None and given:
        try:
            entry_arguments(model, given)
        except ValueError:
            builder = get_entry(model).builder
            takes = [
                "--" + p.replace("_", "-")
                for p in inspect.signature(builder).parameters
                if p not in NOT_OPTIONS
            ]
            wrong = sorted(
                "--" + k.replace("_", "-") for k in given if k not in inspect.signature(builder).parameters
            )
            raise ValueError(
                f"{model} does not take {', '.join(wrong)}; its options are {', '.join(takes)}"
            ) from None
    return given


def option_names() -> Iterable[str]:
    """The flags :func:`add_model_options` adds (``--width``, ``--no-shuffle`` ...)."""
    for option in model_options():
        yield option.flag
        if option.kind is bool:
            yield "--no-" + option.flag[2:]


def add_weights_options(
    parser: argparse.ArgumentParser,
    weights_help: str = "a weights tag (see 'lightnets weights') or a weights file",
) -> None:
    """``--weights`` (required), ``--model`` for files that do not say, ``--weights-root``,
    and the model options: what a command that runs trained weights takes."""
    parser.add_argument("--weights", required=True, help=weights_help)
    parser.add_argument("--model", help="the registered model (needed only for files that do not say)")
    parser.add_argument(
        "--weights-root", metavar="DIR", help="folder of original weight files ($LIGHTNETS_WEIGHTS)"
    )
    add_model_options(parser)


def add_model_or_weights_options(parser: argparse.ArgumentParser, weights_required: bool = False) -> None:
    """``MODEL`` (optional when the weights say), ``--weights``, ``--weights-root`` and the
    model options: what a command that works on an architecture, trained or not, takes."""
    parser.add_argument("model", nargs="?", help="a registered name (optional when --weights says)")
    parser.add_argument(
        "--weights",
        required=weights_required,
        help="a weights tag or file" + ("" if weights_required else " (default: random initialisation)"),
    )
    parser.add_argument(
        "--weights-root", metavar="DIR", help="folder of original weight files ($LIGHTNETS_WEIGHTS)"
    )
    add_model_options(parser)


def model_from_args(args: argparse.Namespace) -> Any:
    """The model ``MODEL`` and ``--weights`` name (randomly initialised without weights)."""
    from .create import create_model, model_for_weights

    if args.model is None and args.weights is None:
        raise ValueError("give a MODEL, --weights, or both")
    kwargs = model_kwargs(args, args.model)
    if args.weights is None:
        return create_model(args.model, **kwargs)
    return model_for_weights(args.weights, args.model, args.weights_root, **kwargs)
