"""The lab's small control API (JSON over HTTP on 127.0.0.1 only).

    GET  /status                         every host: power, agent, BMCs, command counts
    POST /fault {"host", "fault", "clear", "options"}  options: the fault's own (kdump.py,
                                         pdu_unresponsive's "pdu")
    POST /power {"pdu", "outlet", "power"} or {"bmc", "power"}: a hand on a PDU outlet's or
                                         a chassis's switch (no request to the device, not counted)
    POST /stop                           stop the lab
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hostpower.lab.supervisor import Lab, LabError


class ControlServer:
    def __init__(self, lab: Lab, on_stop: Callable[[], None], port: int = 0) -> None:
        self.lab = lab
        self.on_stop = on_stop
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="lab-control",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "ControlServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:  # quiet: the lab prints its own events
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/status":
                    self._send(200, server.lab.status())
                else:
                    self._send(404, {"detail": f"no resource {self.path}"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, {"detail": "body is not JSON"})
                    return
                if self.path == "/fault":
                    try:
                        options = body.get("options")
                        if options is not None and not isinstance(options, dict):
                            raise LabError("options must be an object")
                        message = server.lab.fault(str(body.get("host")), str(body.get("fault")),
                                                   bool(body.get("clear", False)), options)
                    except LabError as exc:
                        self._send(400, {"detail": str(exc)})
                        return
                    self._send(200, {"detail": message})
                elif self.path == "/power":
                    try:
                        power = str(body.get("power"))
                        if "pdu" in body:
                            outlet = body.get("outlet")
                            if isinstance(outlet, bool) or not isinstance(outlet, int):
                                raise LabError("outlet must be an outlet number")
                            message = server.lab.set_outlet(str(body["pdu"]), outlet, power)
                        elif "bmc" in body:
                            message = server.lab.set_chassis(str(body["bmc"]), power)
                        else:
                            raise LabError("give a pdu and an outlet, or a bmc")
                    except LabError as exc:
                        self._send(400, {"detail": str(exc)})
                        return
                    self._send(200, {"detail": message})
                elif self.path == "/stop":
                    self._send(200, {"detail": "stopping"})
                    threading.Thread(target=server.on_stop, daemon=True).start()
                else:
                    self._send(404, {"detail": f"no resource {self.path}"})

        return Handler
