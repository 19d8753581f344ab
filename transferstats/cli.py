"""The ``transferstats`` command. Each subcommand lives in its own module, imported only when used,
so ``analyze`` never imports torch.

A command module defines ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from transferstats import __version__

COMMANDS = {
    "analyze": ("transferstats.commands.analyze", "analyse a results folder and write a report"),
    "validate": ("transferstats.commands.validate", "check a results folder and list every problem"),
    "simulate": ("transferstats.commands.simulate", "write a results folder from a known generative model"),
    "plan": ("transferstats.commands.plan", "show the runs a grid specification expands to"),
    "run": ("transferstats.commands.run", "run a grid specification"),
    "status": ("transferstats.commands.status", "complete / failed / pending runs of a results folder"),
    "power": ("transferstats.commands.power", "power of a grid, and cheaper designs that reach it"),
    "import": ("transferstats.commands.import_results", "write lm-eval, Trainer or jiant results as runs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="transferstats", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"transferstats {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module_name=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return importlib.import_module(args.module_name).run(args)


if __name__ == "__main__":
    sys.exit(main())
