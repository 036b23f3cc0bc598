"""The ``hear-features`` command line (typer + rich)."""

from __future__ import annotations

import typer

from hear_features.cli import demo, encode, forget, probe, serve, store

# Third-party chatter is silenced once, for every entry point, by hear_features.quiet.
app = typer.Typer(
    name="hear-features",
    help="A feature store and similarity search for HeAR embeddings of cough and breath sounds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Docstrings are wrapped for the source; markdown reflows them to the terminal.
    rich_markup_mode="markdown",
)
app.command("make-standin")(encode.make_standin)
app.command("embed")(encode.embed)
app.command("register")(store.register)
app.command("training-set")(store.training_set)
app.command("more-like")(store.more_like)
app.command("forget")(forget.forget)
app.command("probe")(probe.probe)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)

__all__ = ["app"]
