"""The catalog: ingest with de-identification, sources, patients → studies → series → instances, queries."""
