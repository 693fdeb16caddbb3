"""The model registry: versions with lineage, aliases with promotion and rollback, gate reports, model cards."""
