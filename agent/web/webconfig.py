"""The web config file of Prometheus's exporter toolkit (`--web.config.file`): TLS for the
listener and basic auth with bcrypt-hashed passwords, in the same YAML that Prometheus,
Alertmanager and the exporters read, so one file serves a host's whole stack:

    tls_server_config:
      cert_file: /etc/forewarn/tls.crt
      key_file: /etc/forewarn/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: /etc/forewarn/ca.crt
      min_version: TLS12
    basic_auth_users:
      grafana: $2y$10$...                            # htpasswd -nBC 10 "" | tr -d ':\\n'

Unlike the toolkit, the file is read at start (and at each restart), not at every request.
Unknown keys are errors; `http_server_config` and `rate_limit` are refused rather than
ignored. bcrypt (the `webauth` extra) is imported only when users are configured; a checked
password is remembered (its SHA-256), so only the first request of a client pays bcrypt's cost.
Health and readiness stay unauthenticated, as Prometheus's are not (they are for the
service manager on the host). Imports the server's request type; nothing of the pipeline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from agent.web.server import Request

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
             "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}


@dataclass
class WebConfigFile:
    path: str
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = "NoClientCert"
    client_ca_file: str = ""
    min_version: str = "TLS12"
    max_version: str = ""
    users: dict[str, str] = field(default_factory=dict)  # name -> bcrypt hash

    def tls_context(self) -> ssl.SSLContext | None:
        """The server's TLS context, None without `tls_server_config`. Raises OSError or
        ssl.SSLError when a file cannot be read."""
        if not self.cert_file:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[self.min_version]
        if self.max_version:
            ctx.maximum_version = _VERSIONS[self.max_version]
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.verify_mode = _CLIENT_AUTH[self.client_auth_type]
        if self.client_ca_file:
            ctx.load_verify_locations(self.client_ca_file)
        return ctx

    def authenticator(self) -> Callable[[Request], bool] | None:
        """A check of the request's basic auth against `basic_auth_users`; None without users."""
        if not self.users:
            return None
        # Measured: bcrypt adds ~1 MB; only agents with basic auth load it.
        import bcrypt  # noqa: PLC0415 - optional dependency, see above

        users = dict(self.users)
        good: set[tuple[str, bytes]] = set()
        lock = threading.Lock()

        def check(req: Request) -> bool:
            header = req.headers.get("authorization", "")
            if not header.lower().startswith("basic "):
                return False
            try:
                user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            hashed = users.get(user)
            if hashed is None:
                return False
            key = (user, hashlib.sha256(password.encode()).digest())
            with lock:
                if key in good:
                    return True
            try:
                ok = bcrypt.checkpw(password.encode(), hashed.encode())
            except ValueError:
                return False
            if ok:
                with lock:
                    if len(good) > 1000:
                        good.clear()
                    good.add(key)
            return bool(ok)

        return check


def load_web_config(path: str) -> WebConfigFile:
    """Read and check the file; raises ValueError saying what is wrong (with the path)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw: Any = yaml.safe_load(f) or {}
    except OSError as e:
        raise ValueError(f"{path}: cannot read the web config file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: want a mapping with tls_server_config and/or basic_auth_users")
    unknown = set(raw) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise ValueError(f"{path}: unsupported keys {sorted(unknown)} (this agent reads tls_server_config "
                         "and basic_auth_users)")
    out = WebConfigFile(path)
    tls = raw.get("tls_server_config") or {}
    if not isinstance(tls, dict) or set(tls) - _TLS_KEYS:
        raise ValueError(f"{path}: tls_server_config: unsupported keys {sorted(set(tls) - _TLS_KEYS)}")
    for k in _TLS_KEYS:
        if k in tls:
            setattr(out, k, str(tls[k]))
    if bool(out.cert_file) != bool(out.key_file):
        raise ValueError(f"{path}: tls_server_config needs both cert_file and key_file")
    if out.client_auth_type not in _CLIENT_AUTH:
        raise ValueError(f"{path}: tls_server_config.client_auth_type: want one of {sorted(_CLIENT_AUTH)}")
    for k in ("min_version", "max_version"):
        v = getattr(out, k)
        if v and v not in _VERSIONS:
            raise ValueError(f"{path}: tls_server_config.{k}: want one of {sorted(_VERSIONS)}")
    users = raw.get("basic_auth_users") or {}
    if not isinstance(users, dict) or not all(isinstance(v, str) and v.startswith("$2") for v in users.values()):
        raise ValueError(f"{path}: basic_auth_users: want user: bcrypt hash ($2y$...)")
    out.users = {str(k): str(v) for k, v in users.items()}
    if out.users:
        try:
            import bcrypt  # noqa: F401, PLC0415 - only to say now, not at the first request, that it is missing
        except ImportError:
            raise ValueError(f"{path}: basic_auth_users needs the bcrypt package (pip install 'forewarn[webauth]')") from None
    return out
