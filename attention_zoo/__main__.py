"""``python -m attention_zoo``: the registered attentions, their complexity, paper and config file."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from attention_zoo import REGISTRY, config_path


def main() -> None:
    table = Table(title=f"{len(REGISTRY)} attentions (run.py attention=<name>)")
    for col in ("name", "complexity", "source", "class", "config"):
        table.add_column(col)
    for name in sorted(REGISTRY):
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
