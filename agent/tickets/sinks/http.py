"""What every HTTP sink shares: settings, credentials, and one guarded request function.

- Credentials come from `credentials_file` (fits systemd `LoadCredential`), are read once at
  construction and are kept in a `Secret` whose repr and str never show the value. Every
  answer is scrubbed of the secrets *as it is read*, before any sink code sees it: the raw
  value, its password part, its Basic-auth base64 form, and their JSON-escaped and
  URL-encoded forms are replaced by `<redacted>`. So a server echoing our credentials back
  (in an error, an id, a message) cannot carry them into logs, `outbox.db`, dead letters or
  the API; error reasons are scrubbed once more on the way out.
- TLS verification is always on; `ca_file` adds a private CA. Proxies come from the
  environment (requests' `trust_env`). Every call has a timeout, no redirects are followed
  (a redirect would drop or leak the Authorization header) and answers are read up to a
  bound.
- Classification of answers is `agent.tickets.sinks.base.check_response`: one table for all sinks.
- `HttpSink` is the base of every HTTP sink: the constructor they all share.

`requests` (with urllib3 and ssl, ~14 MB) is imported when the first `HttpClient` is built,
so an agent whose sinks are all local never loads it. Like every sink module, this one knows
nothing of rules, problems or the store.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.config.decode import Duration, check_url, doc
from agent.tickets.sinks.base import DeliveryError, SinkBase, check_response, network_error

if TYPE_CHECKING:
    import requests

MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # an ITSM answer is a few kB; anything bigger is refused
USER_AGENT = f"forewarn/{__version__}"
_REDACTED = "<redacted>"
_DYNAMIC_SECRETS_KEPT = 4
JSON_ESCAPE_LEVELS = 3


class Secret:
    """A credential read from a file. `reveal()` is the only way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled into a state file by accident
        raise TypeError("a Secret cannot be pickled")

    def fragments(self) -> list[str]:
        """Every form in which the secret might come back in an answer: the value, the
        password half of `user:password`, each field of a JSON credentials object, the
        Basic-auth base64 of the whole (UTF-8 and Latin-1), and their URL-encoded and
        JSON-escaped forms (ASCII-only or not, solidus escaped or not, up to
        `JSON_ESCAPE_LEVELS` deep: a server may echo a JSON text inside a JSON string, and we
        decode one level). Longest first."""
        v = self._value
        out = [v]
        if ":" in v:
            out.append(v.split(":", 1)[1])
        try:
            fields = json.loads(v)
        except ValueError:
            fields = None
        if isinstance(fields, dict):
            out += [str(x) for x in fields.values() if isinstance(x, str)]
        for charset in ("utf-8", "latin-1"):
            try:
                out.append(base64.b64encode(v.encode(charset)).decode())
            except UnicodeEncodeError:
                pass
        out += [urllib.parse.quote_plus(f) for f in out] + [urllib.parse.quote(f, safe="") for f in out]
        level = list(out)
        for _ in range(JSON_ESCAPE_LEVELS):
            level = list(dict.fromkeys(json.dumps(f, ensure_ascii=a)[1:-1] for f in level for a in (True, False)))
            level += [f.replace("/", "\\/") for f in level if "/" in f]
            out += level
        return sorted({f for f in out if len(f) >= 4}, key=len, reverse=True)


def read_credentials(path: str) -> Secret:
    """The content of a credentials file, stripped. Errors name the path, never the content."""
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read credentials_file {path}: {e.strerror}") from None
    if not value:
        raise ValueError(f"credentials_file {path} is empty")
    return Secret(value)


def split_user_password(secret: Secret, path: str, what: str) -> tuple[str, str]:
    """`user:password` from a credentials file (Basic auth), or a ValueError naming the path."""
    user, sep, password = secret.reveal().partition(":")
    if not sep or not user or not password:
        raise ValueError(f"credentials_file {path} must hold {what} (one line, user:password)")
    return user, password


@dataclass
class HttpSinkConfig:
    """Settings shared by every HTTP sink; each sink subclasses it with its own fields."""

    url: str = doc("Base URL of the tool (https://...).", default="")
    credentials_file: str = doc(
        "File holding the credential (e.g. /run/credentials/forewarn.service/itsm); read at start.",
        default="",
    )
    ca_file: str = doc("PEM bundle of extra CAs to trust; TLS verification is always on.", default="")
    timeout: Duration = doc("Timeout of each HTTP call.", default=Duration(10))

    def validate(self, err: Any) -> None:
        if msg := check_url(self.url):
            err("url", msg)
        if not self.credentials_file:
            err("credentials_file", "required: a file holding the credential")
        if self.timeout <= 0:
            err("timeout", "must be greater than zero")


class HttpClient:
    """One tool's endpoint: base URL, auth headers, TLS settings, timeout, secret scrubbing.

    `session` may be shared between sinks (one connection pool); the client never mutates it,
    everything sink-specific is passed per request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        ca_file: str = "",
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        secrets: list[Secret] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self._verify: bool | str = ca_file or True
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        if auth is not None:
            # RFC 7617 with charset UTF-8 (requests would encode Latin-1, which turns a non-Latin
            # password into question marks and a Latin one into bytes the tools decode wrongly)
            basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        self._fragments = [f for s in (secrets or []) for f in s.fragments()]
        self._dynamic_fragments: list[list[str]] = []
        # the HTTP stack is loaded by the first HTTP sink built, never by a local-only agent
        import requests  # noqa: PLC0415 - costly optional import (requests, urllib3, ssl)
        import urllib3  # noqa: PLC0415 - comes with requests, loaded with it

        self._network_errors: tuple[type[Exception], ...] = (requests.RequestException,)
        self._connect_timeout: type[Exception] = requests.ConnectTimeout
        self._connection_error: type[Exception] = requests.ConnectionError
        self._new_connection_error: type[Exception] = urllib3.exceptions.NewConnectionError
        self._session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r})"

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def add_secret(self, secret: Secret) -> None:
        """Also scrub a secret obtained later (an OAuth access token); the last few are kept."""
        self._dynamic_fragments = (self._dynamic_fragments + [secret.fragments()])[-_DYNAMIC_SECRETS_KEPT:]

    def _all_fragments(self) -> list[str]:
        frags = self._fragments + [f for fs in self._dynamic_fragments for f in fs]
        return sorted(frags, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for f in self._all_fragments():
            text = text.replace(f, _REDACTED)
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        """An answer's bytes with every form of every secret replaced (before anything reads it)."""
        for f in self._all_fragments():
            fb = f.encode("utf-8")
            if fb in data:
                data = data.replace(fb, _REDACTED.encode())
        return data

    def _never_connected(self, exc: Exception) -> bool:
        """The request never left: a connect timeout, or a refused / unresolvable connection."""
        if isinstance(exc, self._connect_timeout):
            return True
        if isinstance(exc, self._connection_error):
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            return isinstance(reason, self._new_connection_error)
        return False

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        files: Any = None,
        headers: dict[str, str] | None = None,
        accept_statuses: tuple[int, ...] = (),
    ) -> requests.Response:
        """One exchange. Returns a 2xx response (or one whose status is in `accept_statuses`,
        e.g. 404 for a look-up); raises DeliveryError otherwise. The body is read in full,
        up to MAX_RESPONSE_BYTES."""
        hdrs = dict(self._headers)
        if headers:
            hdrs.update(headers)
        try:
            resp = self._session.request(
                method,
                self.url(path),
                params=params,
                json=json_body,
                data=data,
                files=files,
                headers=hdrs,
                timeout=self.timeout,
                verify=self._verify,
                allow_redirects=False,
                stream=True,
            )
            try:
                body = bytearray()
                for chunk in resp.iter_content(65536):
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise DeliveryError(f"{what}: answer larger than {MAX_RESPONSE_BYTES} bytes", False)
                # scrubbed before anything reads it: what resp.text / resp.json() return
                resp._content = self.redact_bytes(bytes(body))
            finally:
                resp.close()
        except self._network_errors as e:
            raise network_error(what, e, maybe_sent=not self._never_connected(e)) from None
        if resp.status_code in accept_statuses:
            return resp
        try:
            check_response(resp, what, redact=self.redact)
        except DeliveryError as e:
            raise DeliveryError(self.redact(e.reason), e.retryable, e.retry_after, e.maybe_sent) from None
        return resp

    def json(self, resp: requests.Response, what: str) -> Any:
        """The JSON body of a 2xx answer; a body that is not JSON is a permanent failure
        (a proxy's HTML page, a wrong URL), reported with its first bytes."""
        try:
            return resp.json()
        except (ValueError, json.JSONDecodeError):
            snippet = self.redact(resp.text or "")[:200].replace("\n", " ")
            raise DeliveryError(
                f"{what}: HTTP {resp.status_code} answer is not JSON: {snippet!r}", retryable=False
            ) from None


def field_path(obj: Any, *keys: Any, what: str) -> Any:
    """`obj[k1][k2]...` from a decoded answer, or a permanent DeliveryError naming the path."""
    cur = obj
    for k in keys:
        try:
            cur = cur[k]
        except (KeyError, IndexError, TypeError):
            path = "".join(f"[{k!r}]" for k in keys)
            raise DeliveryError(f"{what}: answer lacks {path}", retryable=False) from None
    return cur


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def one_line(text: str) -> str:
    return " ".join(text.split())


class HttpSink(SinkBase):
    """The base of the sinks that talk HTTP: the constructor they all share (name, settings,
    one `HttpClient` with the settings' timeout and CA file, the session, the secrets to
    scrub from every error) and a plain repr. Subclasses read their credential with
    `read_credentials` and pass what it becomes (headers, Basic auth) to this constructor."""

    config: HttpSinkConfig

    def __init__(
        self,
        name: str,
        config: HttpSinkConfig,
        *,
        session: requests.Session | None,
        url: str | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        secrets: list[Secret] | None = None,
    ) -> None:
        super().__init__(name, config, state_dir="", session=session)
        self.config = config
        self._http = HttpClient(
            config.url if url is None else url,
            timeout=config.timeout,
            ca_file=config.ca_file,
            headers=headers,
            auth=auth,
            secrets=secrets,
            session=session,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.config.url!r})"
