"""``python -m hear_features`` runs the CLI."""

from hear_features.cli import app

app()
