"""A throw-away Request Tracker 5 (Debian `request-tracker5`) for the tests.

`RTServer(workdir).setup()` writes an RT site configuration into `workdir` (SQLite database,
loopback only, no mail out, BcryptCost 4), initialises the database, adds the ticket custom
field `DedupKey` on queue General, creates an auth token for `root`, disables the scrips
(they only send mail, and slow every create and comment down), and starts `rt-server`
(Starlet) on 127.0.0.1 on a free port. Nothing outside `workdir` is written: RT is pointed
at its configuration through RT_SITE_CONFIG and RT_SITE_CONFIG_DIR, so the packaged /etc
files (root-only, with debconf's answers) are not read.

`stop()` / `start()` stop and restart the web server on the same port and database (the
outage test needs RT to go away and come back). Tested as root (as CI runs it), after

    apt-get install --no-install-recommends request-tracker5 rt5-db-sqlite rt5-standalone \
        dbconfig-no-thanks dma w3m curl

Facts and pitfalls: ../shared/notes/itsm.md, Part 2.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import requests

from tests.helpers import file_tail, free_port, wait_until_serving

RT_SERVER = "/usr/share/request-tracker5/libexec/rt-server"
RT_SETUP_DATABASE = "/usr/sbin/rt-setup-database-5"
RT_LIB = "/usr/share/request-tracker5/lib"
ROOT_PASSWORD = "forewarn-test-root"
DEDUP_FIELD = "DedupKey"
READY_TIMEOUT_SECONDS = 90.0
INSTALL_HINT = ("apt-get install --no-install-recommends request-tracker5 rt5-db-sqlite rt5-standalone "
                "dbconfig-no-thanks dma w3m curl")

_SITE_CONFIG = """\
# Written by tests/rt_server.py: a throw-away test instance (SQLite, loopback, no mail out).
Set($rtname, 'forewarn-test');
Set($Organization, 'forewarn.test');
Set($Timezone, 'UTC');
Set($CorrespondAddress, 'rt@localhost');
Set($CommentAddress, 'rt-comment@localhost');
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{db}');
Set($WebDomain, '127.0.0.1');
Set($WebPort, {port});
Set($WebPath, '');
Set($WebBaseURL, 'http://127.0.0.1:{port}');
Set($MasonDataDir, '{dir}/mason_data');
Set($MasonSessionDir, '{dir}/session_data');
Set($MailCommand, 'mbox');
Set($LogToSyslog, undef);
Set($LogToFile, undef);
Set($LogToSTDERR, 'warning');
# The default cost 12 makes every token-authenticated request take ~0.25 s; must be set before init.
Set($BcryptCost, 4);
1;
"""

_CUSTOM_FIELD_DATA = """\
@CustomFields = (
    {{
        Name        => '{name}',
        Description => 'Dedup key set by Forewarn',
        Type        => 'FreeformSingle',
        LookupType  => 'RT::Queue-RT::Ticket',
        ApplyTo     => ['General'],
    }},
);
1;
"""

_MAKE_TOKEN = r"""
use strict; use warnings; use RT; RT::LoadConfig(); RT::Init();
my $u = RT::User->new(RT->SystemUser); $u->Load("root") or die "no root user\n";
my $t = RT::AuthToken->new(RT::CurrentUser->new($u));
my ($ok, $msg, $auth) = $t->Create(Owner => $u->id, Description => "forewarn tests");
die "token: $msg\n" unless $ok; print "$auth\n";
# No scrips: they only send mail (nowhere, here) and make each create or comment 2-4x slower.
my $scrips = RT::Scrips->new(RT->SystemUser); $scrips->UnLimit;
while (my $s = $scrips->Next) { my ($done, $why) = $s->SetDisabled(1); die "scrip: $why\n" unless $done; }
"""


class RTServer:
    """One RT instance in `workdir`. `url`, `token`, `token_file` are set after `setup()`."""

    def __init__(self, workdir: str) -> None:
        self.workdir = os.path.abspath(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.token_file = os.path.join(self.workdir, "token")
        self.log_path = os.path.join(self.workdir, "rt-server.log")
        self.proc: subprocess.Popen | None = None
        # RT reads only what is in workdir: not /etc/request-tracker5 (root-only, debconf values)
        self._env = {**os.environ, "RT_SITE_CONFIG": os.path.join(self.workdir, "etc", "RT_SiteConfig.pm"),
                     "RT_SITE_CONFIG_DIR": os.path.join(self.workdir, "etc", "RT_SiteConfig.d")}

    # ---- set-up ---------------------------------------------------------------------------

    def setup(self) -> RTServer:
        for path in (RT_SERVER, RT_SETUP_DATABASE):
            if not os.access(path, os.X_OK):
                raise RuntimeError(f"{path} missing: Request Tracker is not installed ({INSTALL_HINT})")
        for d in ("etc/RT_SiteConfig.d", "mason_data", "session_data"):
            os.makedirs(os.path.join(self.workdir, d), exist_ok=True)
        with open(self._env["RT_SITE_CONFIG"], "w") as f:
            f.write(_SITE_CONFIG.format(db=os.path.join(self.workdir, "rtdb"), port=self.port, dir=self.workdir))
        pwfile = os.path.join(self.workdir, "rootpw")
        with open(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(ROOT_PASSWORD + "\n")
        self._run([RT_SETUP_DATABASE, "--action", "init", "--root-password-file", pwfile], "database init")
        datafile = os.path.join(self.workdir, "customfield.pl")
        with open(datafile, "w") as f:
            f.write(_CUSTOM_FIELD_DATA.format(name=DEDUP_FIELD))
        self._run([RT_SETUP_DATABASE, "--action", "insert", "--skip-create", "--datafile", datafile],
                  "custom field")
        self.token = self._run(["perl", f"-I{RT_LIB}", "-e", _MAKE_TOKEN], "auth token and scrips").strip()
        with open(os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(self.token + "\n")
        self.start()
        return self

    def _run(self, cmd: list[str], what: str) -> str:
        r = subprocess.run(cmd, env=self._env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"RT {what} failed ({r.returncode}): {r.stderr[-2000:]}")
        return r.stdout

    # ---- the web server -------------------------------------------------------------------

    def start(self) -> None:
        """Start rt-server (own session, so stop() signals only what it started) and wait
        until REST2 answers with the token."""
        assert self.proc is None, "already running"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [RT_SERVER, "--server", "Starlet", "--host", "127.0.0.1", "--port", str(self.port), "--max-workers", "2"],
            env=self._env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        try:
            wait_until_serving(self.proc, lambda: self.get("/rt").status_code == 200, "rt-server",
                               READY_TIMEOUT_SECONDS, self.log_path, interval=0.2)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """TERM the Starlet master's process group (it and its workers), KILL if it lingers."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        self.proc = None

    def log_tail(self) -> str:
        return file_tail(self.log_path)

    # ---- a tiny client for assertions -------------------------------------------------------

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(f"{self.url}/REST/2.0{path}", headers={"Authorization": f"token {self.token}"},
                            timeout=30, **kw)

    def search(self, query: str) -> list[dict[str, Any]]:
        """Tickets matching TicketSQL `query`, with their fields."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            r = self.get("/tickets", params={"query": query, "per_page": 100, "page": page,
                                              "fields": "Subject,Status,Queue"})
            r.raise_for_status()
            d = r.json()
            items += d.get("items", [])
            if page >= int(d.get("pages") or 0):
                return items
            page += 1

    def ticket(self, tid: int | str) -> dict[str, Any]:
        r = self.get(f"/ticket/{tid}")
        r.raise_for_status()
        return r.json()

    def history(self, tid: int | str) -> list[dict[str, Any]]:
        """Transactions of a ticket, oldest first, with their Type and content (text/plain parts)."""
        out = []
        page = 1
        while True:
            r = self.get(f"/ticket/{tid}/history", params={"fields": "Type,Field,OldValue,NewValue",
                                                            "per_page": 100, "page": page})
            r.raise_for_status()
            d = r.json()
            out += d.get("items", [])
            if page >= int(d.get("pages") or 0):
                return out
            page += 1

    def attachments(self, tid: int | str) -> list[dict[str, Any]]:
        r = self.get(f"/ticket/{tid}/attachments",
                     params={"fields": "ContentType,Filename,Content,TransactionId", "per_page": 100})
        r.raise_for_status()
        return r.json().get("items", [])
