"""Model options generated from the builders: the same in every command, refused when
the chosen model does not take them, and absent options keep each model's default."""

from __future__ import annotations

import argparse

import pytest

import lightnets
from lightnets.cli import build_parser
from lightnets.models import registry
from lightnets.zoo import add_model_options, model_kwargs
from lightnets.zoo.options import docstring_arguments, model_options

EXPECTED = (
    "--width",
    "--groups",
    "--scale",
    "--no-shuffle",
    "--variant",
    "--expansion",
    "--bypass",
    "--dropout",
    "--num-classes",
    "--sr",
    "--pct3x3",
)


def subcommand_help(name: str) -> str:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name].format_help()


@pytest.mark.parametrize("command", ["profile", "export", "train", "bench", "predict", "eval", "convert"])
def test_every_command_lists_every_model_option(command):
    text = subcommand_help(command)
    for flag in EXPECTED:
        assert flag in text, f"{command} --help lacks {flag}"


def test_the_three_commands_list_the_same_options():
    def flags(command: str) -> set[str]:
        text = subcommand_help(command)
        section = text[text.index("model options:") :].split("\n\n", 2)[1]  # up to the next group
        return {word.rstrip(",") for word in section.split() if word.startswith("--")}

    assert flags("profile") == flags("export") == flags("train")
    assert set(EXPECTED) <= flags("profile")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    return parser.parse_args(argv)


def test_an_option_the_model_does_not_take_is_refused_with_the_ones_it_takes():
    with pytest.raises(ValueError, match=r"mobilenet_v2 does not take --groups; its options are --width"):
        model_kwargs(parse("--groups", "3"), "mobilenet_v2")


def test_options_not_given_keep_each_models_default():
    assert model_kwargs(parse(), "squeezenet1_1") == {}
    assert model_kwargs(parse("--no-shuffle", "--groups", "8"), "shufflenet_v1") == {
        "shuffle": False,
        "groups": 8,
    }
    # dropout differs by family; not given, each model keeps its own.
    v1 = lightnets.create_model("mobilenet_v1", **model_kwargs(parse(), "mobilenet_v1"))
    v2 = lightnets.create_model("mobilenet_v2", **model_kwargs(parse(), "mobilenet_v2"))
    assert v1.head.dropout.p != v2.head.dropout.p


def test_a_new_builder_argument_appears_in_every_command():
    def toy_net(num_classes: int = 10, spline_knots: int = 4):
        """A toy network.

        Args:
            num_classes: classes of the classifier.
            spline_knots: knots of the toy's spline,
                continued on a second line.
        """
        return lightnets.create_model("mobilenet_v2", width=0.35, num_classes=num_classes)

    registry.register_model("toy_net")(toy_net)
    try:
        option = next(o for o in model_options() if o.name == "spline_knots")
        assert option.kind is int and option.models == ["toy_net"]
        assert option.help == "knots of the toy's spline, continued on a second line."
        for command in ("profile", "export", "train"):
            assert "--spline-knots" in subcommand_help(command)
        assert model_kwargs(parse("--spline-knots", "7"), "toy_net") == {"spline_knots": 7}
    finally:
        del registry._REGISTRY["toy_net"]


def test_docstring_arguments_reads_google_style_args():
    def f(a: int, b: str):
        """Summary.

        Args:
            a: the first
                argument.
            b (str): the second.

        Returns:
            nothing.
        """

    assert docstring_arguments(f) == {"a": "the first argument.", "b": "the second."}
