"""``python -m attention_zoo [NAME ...]``: the registered attentions (or the named ones), their complexity, paper and
config file."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from attention_zoo import REGISTRY, config_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m attention_zoo", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="registered names to show (default: all)")
    names = parser.parse_args(argv).names or sorted(REGISTRY)
    if unknown := [n for n in names if n not in REGISTRY]:
        parser.error(f"not registered: {', '.join(unknown)}; registered: {', '.join(sorted(REGISTRY))}")
    table = Table(title=f"{len(names)} of {len(REGISTRY)} attentions (run.py attention=<name>)")
    for col in ("name", "complexity", "source", "class", "config"):
        table.add_column(col)
    for name in names:
        spec = REGISTRY[name]
        conf = config_path(name)
        table.add_row(
            name,
            spec.complexity,
            spec.source,
            f"{spec.cls.__module__}.{spec.cls.__qualname__}",
            f"conf/attention/{conf.name}" if conf.exists() else "[red]missing[/red]",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
