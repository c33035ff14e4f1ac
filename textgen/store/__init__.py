"""What is kept on disk: run settings, the model folder (atomic writes, safe reading), the ids cache,
the catalog of models, and training plots."""
