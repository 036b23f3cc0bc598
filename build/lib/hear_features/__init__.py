"""hear-features: a Feast feature store and FAISS similarity search for HeAR embeddings."""

from __future__ import annotations

from hear_features.openmp import prefer_passive_openmp
from hear_features.quiet import quiet_feast_cli, quiet_loggers, quiet_warnings
from hear_features.typechecks import import_feast_without_typechecks

__version__ = "0.1.0"

# Before anything imports FAISS: every entry point (the CLI, the API, the Feast plugins
# that `feast apply` / `feast materialize` load) imports this package first.
prefer_passive_openmp()
import_feast_without_typechecks()
quiet_loggers()
quiet_warnings()
quiet_feast_cli()
