"""The web UI: one page, one script and one stylesheet shipped in the package (`static/`),
served as they are: no build step, no CDN, nothing fetched from elsewhere, so it works on an
air-gapped host. The page reads the same JSON API as any client (alerts, rules, problems,
tickets, forecasts, silences, targets) and writes only through the silence API, which the
server refuses unless the admin API is enabled. Imports nothing of the agent but the server's
reply types.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from agent.web.server import Endpoint, Raw, Reply, Request

PAGES = ("alerts", "problems", "forecasts", "silences", "targets", "rules")
_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
          "index.html": "text/html; charset=utf-8"}


@cache
def _read(name: str) -> bytes:
    return resources.files("agent.web").joinpath("static", name).read_bytes()


def _static(req: Request) -> Reply:
    name = req.path_params.get("file", "")
    if name not in _FILES:
        return Raw(404, b"404 page not found\n")
    return Raw(200, _read(name), _FILES[name])


def _index(req: Request) -> Reply:
    return Raw(200, _read("index.html"), _FILES["index.html"])


def routes() -> dict[str, Endpoint]:
    get = frozenset({"GET"})
    out = {"/": Endpoint(_index, get), "/static/{file}": Endpoint(_static, get)}
    out.update({f"/{page}": Endpoint(_index, get) for page in PAGES})
    return out
