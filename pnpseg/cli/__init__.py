"""The ``pnpseg`` command line: the app with every built-in command and the plugins' commands."""

from __future__ import annotations

from pnpseg.cli import demo, eval, explain, plugins, segment, serve, tune  # noqa: F401  (each registers its command on app)
from pnpseg.cli.app import app
from pnpseg.plugins import register_commands

register_commands(app)


def main() -> None:
    app(prog_name="pnpseg")


__all__ = ["app", "main"]
