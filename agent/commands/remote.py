"""How `forewarn tickets` and `forewarn silence` reach the running agent: its URL (`--url`, else
the config's `web.listen_address`, a wildcard address read as loopback) and one JSON call over
HTTP with a timeout. Errors are worded for the terminal: an agent that does not answer says
how to point at it or to fall back to `--offline`. A helper of the commands; nothing but
commands imports it.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from agent.config.schema import Config, parse_listen_address

TIMEOUT_SECONDS = 10.0


class RemoteError(Exception):
    """A call that did not succeed, with the message to print."""


def agent_url(cfg: Config) -> str:
    """The agent's base URL from its config (HTTPS when it has a TLS web config file)."""
    host, port = parse_listen_address(cfg.web.listen_address)
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if cfg.web.config_file else "http"
    return f"{scheme}://{host}:{port}"


def call(base: str, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None) -> Any:
    """One API call; returns the JSON body (the `data` of Prometheus's envelope). Raises
    RemoteError saying what went wrong."""
    url = base.rstrip("/") + path
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as resp:
            text = resp.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        raw = e.read().decode("utf-8", "replace")
        try:
            detail = json.loads(raw)
        except ValueError:
            detail = raw.strip()
        if isinstance(detail, dict):
            detail = detail.get("error", detail)
        hint = ""
        if e.code == 403:
            hint = "\n  (start the agent with --web.enable-admin-api, or web.enable_admin_api: true; or use --offline)"
        raise RemoteError(f"{method} {url}: HTTP {e.code}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RemoteError(f"cannot reach the agent at {base} ({reason}).\n  Is it running? Point at it with --url, "
                          "or act on its state directory with --offline while it is stopped.") from None
    out = json.loads(text) if text else None
    if isinstance(out, dict) and out.get("status") == "success" and "data" in out:
        return out["data"]
    if isinstance(out, dict) and out.get("status") == "error":
        raise RemoteError(f"{method} {url}: {out.get('error')}")
    return out


def fail(command: str, e: RemoteError) -> int:
    print(f"forewarn {command}: {e}", file=sys.stderr)
    return 1
