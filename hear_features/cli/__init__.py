"""The ``hear-features`` command line (typer + rich)."""

from __future__ import annotations

import warnings

import typer

from hear_features.cli import demo, encode, serve, store

# Third-party chatter that a person running the CLI can do nothing about.
warnings.filterwarnings("ignore", message=".*fetch_arrow_table", category=DeprecationWarning)
warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")

app = typer.Typer(
    name="hear-features",
    help="A feature store and similarity search for HeAR embeddings of cough and breath sounds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("make-standin")(encode.make_standin)
app.command("embed")(encode.embed)
app.command("register")(store.register)
app.command("training-set")(store.training_set)
app.command("more-like")(store.more_like)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)

__all__ = ["app"]
