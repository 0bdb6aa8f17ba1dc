"""`GET /metrics`: this engine's Prometheus metrics (metrics.py), for any
signed-in user. Prometheus itself usually scrapes the separate plain
listener of `hostpower serve --metrics-bind` (docs/metrics.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hostpower.api import errors as E
from hostpower.api.auth import current_user

router = APIRouter(tags=["metrics"])


@router.get("/metrics", dependencies=[Depends(current_user)], response_class=Response,
            responses={200: {"content": {"text/plain": {}},
                             "description": "the Prometheus text format"},
                       **E.responses(401)})
def metrics(request: Request) -> Response:
    """This engine's metrics in the Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
