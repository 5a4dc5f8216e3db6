"""The stoQ v3 API, backed by stoq_core."""
