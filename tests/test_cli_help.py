"""`lowdim --help` and every command's `--help`: each option says what it is and what it
defaults to, and nothing Python-internal leaks into the text.

The rule checked, for every argparse action but help, version and the command list:
- it has help text, and that text says more than its default;
- an option that takes a value and is not required shows "(default: X)", and where the option
  has a default value (not None, which each option explains in words), X is that value
  (a list as "A,B", an empty one as "none");
- flags (options that take no value) are off unless given, so they need only help text;
- no help text shows "None", "[]", braces, "dict_keys", a Python object's repr or a doubled
  "%%" (argparse reads help as a %-format: a literal % must be written %%, and shows as one).
"""

from __future__ import annotations

import argparse
import re

import pytest

from lowdim.cli import COMMANDS, build_parser, main

ARTEFACTS = ("None", "[]", "{", "}", "dict_", "<function", "<class", " at 0x", "%%", "%(")


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by name (one module can add several commands)."""
    root = build_parser()
    (sub,) = [a for a in root._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def checked_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
        and not isinstance(a, argparse._SubParsersAction)
    ]


def expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The action's help as `--help` prints it, unwrapped (defaults and %-escapes applied)."""
    formatter = parser._get_formatter()
    return " ".join(formatter._expand_help(action).split())


def shows(default, shown: str) -> bool:
    """Whether the text after "(default: " starts with `default`."""
    if isinstance(default, list):
        expected = ",".join(map(str, default)) if default else "none"
        return shown.startswith(expected)
    if isinstance(default, (int, float)):
        token = re.match(r"[^,;)\s]+", shown)
        try:
            return token is not None and float(token.group()) == float(default)
        except ValueError:
            return False
    return re.match(rf"{re.escape(str(default))}[,;)\s]", shown) is not None


def test_every_command_is_checked():
    names = set(commands())
    assert {"train-sgd", "train-psgd", "train-pbfgs", "twa", "rbd", "intrinsic-dim"} <= names
    assert {"compress", "evaluate", "report", "verify"} <= names
    assert len(COMMANDS) <= len(names)


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_has_help_and_shows_its_default(name):
    parser = commands()[name]
    problems = []
    for action in checked_actions(parser):
        label = "/".join(action.option_strings) or action.dest
        if not action.help:
            problems.append(f"{label}: no help text")
            continue
        text = expanded_help(parser, action)
        described = re.sub(r"\(default: [^)]*\)", "", text).strip(" ,;.")
        if not described:
            problems.append(f"{label}: no help text beyond its default ({text!r})")
        for artefact in ARTEFACTS:
            if artefact in text:
                problems.append(f"{label}: {artefact!r} in {text!r}")
        takes_value = action.nargs != 0
        if action.option_strings and takes_value and not action.required:
            if "(default: " not in text:
                problems.append(f"{label}: no '(default: ...)' in {text!r}")
            elif action.default is not None:
                shown = text.split("(default: ", 1)[1]
                if not shows(action.default, shown):
                    problems.append(f"{label}: shows {shown!r}, default is {action.default!r}")
    assert not problems, "\n".join(problems)


def help_text(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    return out


def test_lowdim_help_lists_every_command_cleanly(capsys):
    text = help_text(capsys, ["--help"])
    for name in commands():
        assert name in text
    assert "90% accuracy" in text
    usage, _, rest = text.partition("\n\n")
    for artefact in ARTEFACTS:
        assert artefact not in rest, artefact


@pytest.mark.parametrize("name", sorted(commands()))
def test_command_help_renders(capsys, name):
    text = help_text(capsys, [name, "--help"])
    parser = commands()[name]
    for action in checked_actions(parser):
        if action.option_strings:
            assert action.option_strings[0] in text
    assert "(default: None)" not in text and "%%" not in text
