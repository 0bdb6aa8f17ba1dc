"""uvicorn's server as a systemd `Type=notify` service (imported only by
`hostpower serve`: uvicorn is not loaded for the other commands)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from hostpower.hostagent import sdnotify


class NotifyingServer(uvicorn.Server):
    """uvicorn's server telling systemd (`Type=notify`) when the engine is
    ready — its runtime started, the API listening — and, under
    `WatchdogSec=`, that its event loop still turns (a hung engine is
    restarted by systemd rather than silently fencing nothing)."""

    _watchdog: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            sdnotify.notify("READY=1")
            interval = sdnotify.watchdog_interval()
            if interval is not None:
                self._watchdog = asyncio.create_task(self._ping(interval))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        sdnotify.notify("STOPPING=1")
        if self._watchdog is not None:
            self._watchdog.cancel()
        await super().shutdown(sockets=sockets)

    @staticmethod
    async def _ping(interval: float) -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
