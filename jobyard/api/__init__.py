"""FastAPI routers: the REST API under /api/v1."""
