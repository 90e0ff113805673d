"""How `forewarn tickets`, `silence` and `remediation` reach the running agent: its URL (`--url`,
else the config's `web.listen_address`, a wildcard address read as loopback) and one JSON call
over HTTP with a timeout; or, with `--offline`, the config whose state directory they read.
Errors are worded for the terminal: an agent that does not answer says how to point at it or
to fall back to `--offline`. A helper of the commands; nothing but commands imports it.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from agent.config.schema import Config, ConfigErrors, load_config, parse_listen_address

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


def load_config_for_command(path: str) -> Config | None:
    """The config, or None after printing every problem as PATH:LINE:COL: message.

    A missing file is an error: falling back to defaults would read some other state_dir."""
    try:
        return load_config(path)
    except ConfigErrors as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        return None


def agent_base(args: Any) -> str | None:
    """The running agent's URL: `--url`, else from the config (None after printing why not)."""
    if args.url:
        return str(args.url)
    cfg = load_config_for_command(args.config)
    if cfg is None:
        print("  (give the agent's address with --url, or the config it runs with with --config)", file=sys.stderr)
        return None
    return agent_url(cfg)


def agent_or_config(args: Any, remote: Callable[[str, Any], int]) -> int | Config:
    """Without `--offline`: the exit status of `remote(base URL, args)` (1 when the agent's
    address cannot be found). With it: the config, whose state directory the command reads
    itself (1 after printing why it is invalid)."""
    if not args.offline:
        base = agent_base(args)
        return 1 if base is None else remote(base, args)
    cfg = load_config_for_command(args.config)
    return 1 if cfg is None else cfg
