"""The REST API (FastAPI, JSON, OpenAPI at /api/openapi.json)."""
