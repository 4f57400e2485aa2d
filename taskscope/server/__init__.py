"""The `taskscope ui` server: the ingest API and the pages that read the local store."""
