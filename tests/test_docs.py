"""The docs build is a test: docs/ and README.md say what the code does.

- The generated references (docs/reference/) equal what `scripts/gen_docs.py` (through
  `agent.config.reference`) generates now, and list every key of the config schema, of every
  sink's settings, of rule files and of `forewarn test` files, and every template function and
  `$forecast` / `$anomaly` field.
- Every fenced YAML block says what it is in its info string and passes the matching check:
  `yaml config` (a config file: `forewarn check --config`), `yaml rules` (a rule file:
  `forewarn check`), `yaml rule` (one rule, checked inside a group), `yaml sink` (one
  `ticketing.sinks` entry, checked inside a config), `yaml test` (a `forewarn test` file, run),
  `yaml fragment` (part of a file: parsed only). `file=PATH` says the block is that file of the
  repository, verbatim. Credentials files under /run/credentials/forewarn.service/ are created
  (empty of secrets) where the check can see them.
- Every `forewarn ...` command in a shell block parses with the CLI's parser. Blocks marked
  `sh run` are run whole (bash, in a scratch directory beside the repository's files); in other
  blocks, except `sh host` ones (commands for an installed host: /etc paths, sudo), the commands
  that work offline (check, test, backtest of a file, detect, tickets list and outbox, silence
  list) are run one by one. Every one must exit 0.
- Getting started is followed step by step against a real daemon: first run on the shipped
  config, a first rule, a first ticket in the local store, its resolution.
- Every relative link resolves (to a file, and to a heading when it names one); nothing links
  outside the repository except example hosts and public vendor documentation; nothing points
  at the team's shared design notes.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import typing
from typing import Any, get_args, get_origin
from urllib.parse import urlparse

import pytest
import requests
import yaml

from tests.helpers import REPO, free_port, wait_for

DOCS = os.path.join(REPO, "docs")
PAGES = sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True)) + [os.path.join(REPO, "README.md")]
YAML_KINDS = {"config", "rules", "rule", "sink", "test", "fragment"}
SHELL_LANGS = {"sh", "shell", "bash", "console"}
CREDENTIALS_DIR = "/run/credentials/forewarn.service/"
# Links to these hosts are public vendor documentation; example and local hosts are allowed too.
VENDOR_DOCS = {"prometheus.io", "grafana.com", "docs.python.org", "www.freedesktop.org"}
README_FIRST_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/forewarn run --config config/forewarn.yml\n",
    "scripts/test.sh\n",
]


def rel(path: str) -> str:
    return os.path.relpath(path, REPO)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---- Markdown -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Block:
    page: str
    line: int  # of the opening fence
    lang: str
    attrs: list[str]
    text: str

    @property
    def where(self) -> str:
        return f"{rel(self.page)}:{self.line}"

    def attr(self, name: str) -> str | None:
        for a in self.attrs:
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
        return None


_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")


def blocks(page: str) -> list[Block]:
    """Fenced code blocks, indented ones (inside list items) too, their indent removed."""
    out: list[Block] = []
    lines = read(page).splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).strip().split()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            c = _FENCE.match(lines[j])
            if c and c.group(2).startswith(fence[0] * len(fence)) and not c.group(3).strip():
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        assert j < len(lines), f"{rel(page)}:{i + 1}: unclosed code block"
        out.append(Block(page, i + 1, info[0] if info else "", info[1:], "\n".join(body) + "\n"))
        i = j + 1
    return out


def all_blocks() -> list[Block]:
    return [b for p in PAGES for b in blocks(p)]


def prose(page: str) -> str:
    """The page without fenced blocks and inline code (where links do not count)."""
    text = read(page)
    text = re.sub(r"^(\s*)(`{3,}|~{3,}).*?^\1\2\s*$", "", text, flags=re.S | re.M)
    return re.sub(r"(`+)(.+?)\1", "", text)


def slugs(page: str) -> set[str]:
    """GitHub's heading anchors of a page (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^(\s*)(`{3,}|~{3,}).*?^\1\2\s*$", "", read(page), flags=re.S | re.M)
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        s = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


# ---- generated references -----------------------------------------------------------------------


def gen_docs() -> Any:
    spec = importlib.util.spec_from_file_location("gen_docs", os.path.join(REPO, "scripts", "gen_docs.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_current():
    from agent.config.reference import config_reference

    pages = gen_docs().generate()
    assert set(pages) == {"docs/reference/configuration.md", "docs/reference/rule-file.md", "docs/reference/test-file.md"}
    stale = [p for p, text in pages.items() if not os.path.exists(os.path.join(REPO, p)) or read(os.path.join(REPO, p)) != text]
    assert not stale, f"out of date, run `python scripts/gen_docs.py`: {stale}"
    assert read(os.path.join(REPO, "docs/reference/configuration.md")) == config_reference()


def _sections(page: str) -> dict[str, str]:
    """Heading text (## level) -> the section's text."""
    parts = re.split(r"^## (.+)$", read(os.path.join(REPO, page)), flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _dataclass_of(tp: Any) -> tuple[Any, bool]:
    """(dataclass or type with from_yaml, is a list of it) for a field type, else (None, False)."""
    if get_origin(tp) in (typing.Union, __import__("types").UnionType):
        tp = [a for a in get_args(tp) if a is not type(None)][0]
    if get_origin(tp) is list:
        item = get_args(tp)[0]
        if dataclasses.is_dataclass(item) or hasattr(item, "from_yaml"):
            return item, True
        return None, False
    if dataclasses.is_dataclass(tp) or hasattr(tp, "from_yaml"):
        return tp, False
    return None, False


def expected_keys(cls: Any, path: str, special: dict[Any, Any], item_types: dict[str, Any] | None = None
                  ) -> list[tuple[str, str]]:
    """(heading, key) for every key of `cls` at `path` and below: an independent walk of the
    schema, so a key the generator would skip is missed here."""
    item_types = item_types or {}
    heading = f"`{path}`" if path else "Top level"
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("internal"):
            continue
        key = f.metadata.get("yaml", f.name)
        out.append((heading, key))
        sub = f"{path}.{key}" if path else key
        nested, is_list = _dataclass_of(hints[f.name])
        if nested is None and key in item_types:
            nested, is_list = item_types[key], True
        if nested is None:
            continue
        child = sub + ("[]" if is_list else "")
        if nested in special:
            out += special[nested](child)
        else:
            out += expected_keys(nested, child, special, item_types)
    return out


def _typed_keys(types: Any) -> Any:
    """The keys of a list of `name` + `type` entries: the common two, and each type's settings."""
    def keys(path: str) -> list[tuple[str, str]]:
        out = [(f"`{path}`", "name"), (f"`{path}`", "type")]
        for name in types:
            heading = f"`{path}` with `type: {name}`"
            out += [(heading, f.name) for f in dataclasses.fields(types[name].Config)]
        return out

    return keys


def _assert_keys_listed(page: str, keys: list[tuple[str, str]]) -> None:
    sections = _sections(page)
    missing = [f"{h}: {k}" for h, k in keys if h not in sections or f"- `{k}` (" not in sections[h]]
    assert not missing, f"{page} lacks: {missing}"


def test_reference_lists_every_config_key():
    from agent.config.schema import Config, RemediationEntry, SinkEntry
    from agent.tickets.remediation import REMEDIATION_TYPES
    from agent.tickets.sinks import SINK_TYPES

    keys = expected_keys(Config, "", {SinkEntry: _typed_keys(SINK_TYPES), RemediationEntry: _typed_keys(REMEDIATION_TYPES)})
    assert ("`global`", "scrape_interval") in keys and ("`ticketing.sinks[]` with `type: servicenow`", "table") in keys
    assert ("`remediation.definitions[]` with `type: command`", "env_files") in keys
    _assert_keys_listed("docs/reference/configuration.md", keys)


def test_reference_lists_every_rule_file_key_and_template_name():
    from agent.rules.detectors import AnomalyInfo, BreachInfo
    from agent.rules.file import GroupSpec, RuleSpec
    from agent.rules.slospec import SloSpec
    from agent.rules.templates import BASE_VARIABLES
    from agent.rules.templates.functions import FUNCTIONS

    keys = [("Top level", "groups")] + expected_keys(GroupSpec, "groups[]", {}, {"rules": RuleSpec})
    assert ("`groups[].rules[].forecast`", "threshold") in keys and ("`groups[].rules[]`", "for") in keys
    keys += expected_keys(SloSpec, "groups[].rules[] with slo:", {})
    assert ("`groups[].rules[] with slo:.sli.latency`", "threshold") in keys
    assert ("`groups[].rules[] with slo:.alerting.windows[]`", "budget_percent") in keys
    _assert_keys_listed("docs/reference/rule-file.md", keys)
    templates = _sections("docs/reference/rule-file.md")["Templates"]
    names = [*BASE_VARIABLES, "$forecast", "$anomaly", *FUNCTIONS, "and", "or",
             *(f.name for f in dataclasses.fields(BreachInfo)), *(f.name for f in dataclasses.fields(AnomalyInfo))]
    missing = [n for n in names if f"| `{n}` |" not in templates]
    assert not missing, f"docs/reference/rule-file.md: templates section lacks {missing}"


def test_reference_lists_every_test_file_key():
    from agent.commands.test import TestFile

    _assert_keys_listed("docs/reference/test-file.md", expected_keys(TestFile, "", {}))


# ---- YAML examples -------------------------------------------------------------------------------


def yaml_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang in ("yaml", "yml")]


def test_every_yaml_block_says_what_it_is():
    unmarked = [b.where for b in yaml_blocks() if not b.attrs or b.attrs[0] not in YAML_KINDS]
    assert not unmarked, f"YAML blocks need an info string ({', '.join(sorted(YAML_KINDS))}): {unmarked}"
    kinds = {b.attrs[0] for b in yaml_blocks()}
    assert {"config", "rules", "rule", "sink", "test"} <= kinds


def _with_credentials(text: str, tmp: str) -> str:
    """The config with /run/credentials/forewarn.service/NAME files created under `tmp`."""
    creds = os.path.join(tmp, "credentials")
    os.makedirs(creds, exist_ok=True)
    for name in re.findall(re.escape(CREDENTIALS_DIR) + r"([\w.-]+)", text):
        with open(os.path.join(creds, name), "w", encoding="utf-8") as f:
            f.write("user:secret\n")
    return text.replace(CREDENTIALS_DIR, creds + "/")


def _check(args: list[str], capsys: Any) -> tuple[int, str]:
    from agent.cli import main

    code = main(["check", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("block", yaml_blocks(), ids=lambda b: b.where)
def test_yaml_example(block: Block, tmp_path, capsys):
    kind = block.attrs[0]
    data = yaml.safe_load(block.text)
    assert data is not None, f"{block.where}: empty block"
    path = block.attr("file")
    if path is not None:
        assert os.path.isfile(os.path.join(REPO, path)), f"{block.where}: file={path} does not exist"
        assert read(os.path.join(REPO, path)) == block.text, f"{block.where}: differs from {path}"
    if kind == "fragment":
        return
    if kind == "rule":
        text = yaml.safe_dump({"groups": [{"name": "example", "rules": [data]}]}, sort_keys=False)
        kind = "rules"
    elif kind == "sink":
        text = yaml.safe_dump({"ticketing": {"sinks": [data]}}, sort_keys=False)
        kind = "config"
    elif kind == "config" and path is not None and data.get("rule_files"):
        # a config file of the repository: its rule files are relative to where it lives
        base = os.path.dirname(os.path.join(REPO, path))
        data["rule_files"] = [os.path.join(base, p) for p in data["rule_files"]]
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = block.text
    if kind == "config":
        cfg = tmp_path / "forewarn.yml"
        cfg.write_text(_with_credentials(text, str(tmp_path)))
        code, out = _check(["--config", str(cfg)], capsys)
    elif kind == "rules":
        rules = os.path.join(REPO, path) if path else str(tmp_path / "rules.yml")
        if not path:
            (tmp_path / "rules.yml").write_text(text)
        code, out = _check([rules], capsys)
    else:
        assert kind == "test" and path, f"{block.where}: a test block needs file= (its rule_files are relative)"
        from agent.cli import main

        code = main(["test", os.path.join(REPO, path)])
        out = capsys.readouterr().err
    assert code == 0, f"{block.where} ({block.attrs[0]}) fails:\n{out}"


def test_json_examples_parse():
    for b in all_blocks():
        if b.lang == "json":
            json.loads(b.text)


# ---- shell commands ------------------------------------------------------------------------------


_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}


def forewarn_commands(block: Block) -> list[list[str]]:
    """The argument lists of every `forewarn` (or .../bin/forewarn) invocation in command position."""
    text = block.text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*\$\s+", "", line)
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        try:
            tokens = list(lex)
        except ValueError as e:
            raise AssertionError(f"{block.where}: cannot split {line!r}: {e}") from None
        command: list[str] = []
        for tok in tokens + [";"]:
            if tok in _OPERATORS or set(tok) <= set("<>&|;()"):
                args = _strip_prefix(command)
                if args and (args[0] == "forewarn" or re.fullmatch(r"[./\w-]*/forewarn", args[0])):
                    rest = args[1:]
                    while rest and re.fullmatch(r"\d", rest[-1]):  # "2>" split as "2", ">"
                        rest.pop()
                    out.append(rest)
                command = [] if tok not in (">", ">>", "<", "2>") else ["<redirect>"]
                continue
            if command and command[-1] == "<redirect>":
                continue
            command.append(tok)
    return out


def _strip_prefix(tokens: list[str]) -> list[str]:
    tokens = [t for t in tokens if t != "<redirect>"]
    while tokens and (tokens[0] in ("sudo", "env", "time", "exec") or re.fullmatch(r"\w+=\S*", tokens[0])):
        tokens = tokens[1:]
    return tokens


def shell_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang in SHELL_LANGS]


def all_commands() -> list[tuple[Block, list[str]]]:
    return [(b, args) for b in shell_blocks() for args in forewarn_commands(b)]


def test_commands_are_found():
    cmds = {args[0] for _, args in all_commands() if args}
    assert {"run", "check", "test", "backtest", "detect", "tickets"} <= cmds, cmds


@pytest.mark.parametrize("block,args", all_commands(), ids=lambda x: x.where if isinstance(x, Block) else " ".join(x))
def test_command_parses(block: Block, args: list[str]):
    from agent.cli import build_parser

    try:
        ns = build_parser().parse_args(args)
    except SystemExit as e:
        raise AssertionError(f"{block.where}: `forewarn {' '.join(args)}` does not parse (exit {e.code})") from None
    assert ns.command, f"{block.where}: `forewarn {' '.join(args)}` names no command"
    if ns.command == "silence":
        assert ns.silence_action, f"{block.where}: `forewarn {' '.join(args)}` names no silence action"


def scratch(tmp_path) -> tuple[str, dict[str, str]]:
    """A working directory with the repository's files linked in and `forewarn` on PATH."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    for d in ("config", "docs", "rules", "tests", "dashboards", "systemd"):
        os.symlink(os.path.join(REPO, d), work / d)
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True)
    shim = bindir / "forewarn"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m agent \"$@\"\n")
    shim.chmod(0o755)
    py = bindir / "python3"
    py.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    py.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("STATE_DIRECTORY", None)
    return str(work), env


def _offline(args: list[str]) -> bool:
    """Commands that work without a daemon or a network."""
    if not args:
        return False
    cmd = args[0]
    if cmd in ("check", "test", "detect"):
        return True
    if cmd == "backtest":
        i = args.index("--input") if "--input" in args else -1
        return i >= 0 and not args[i + 1].startswith(("http://", "https://"))
    if cmd == "tickets":  # they ask the running agent unless told --offline
        return "--offline" in args and "show" not in args
    if cmd == "silence":
        return "--offline" in args and "list" in args
    return False


def runnable() -> list[tuple[str, Block, str]]:
    out = []
    for b in shell_blocks():
        if "run" in b.attrs:
            out.append(("block", b, b.text))
        elif "host" not in b.attrs:
            for args in forewarn_commands(b):
                if _offline(args):
                    out.append(("command", b, shlex.join(["forewarn", *args])))
    return out


def test_offline_commands_are_run():
    ran = {shlex.split(c)[1] for kind, _, c in runnable() if kind == "command"}
    ran |= {a[0] for _, b, _ in runnable() for a in forewarn_commands(b) if "run" in b.attrs}
    assert {"check", "test", "backtest", "detect"} <= ran, ran


@pytest.mark.parametrize("kind,block,script", runnable(), ids=lambda x: x.where if isinstance(x, Block) else None)
def test_shell_example_runs(kind: str, block: Block, script: str, tmp_path):
    work, env = scratch(tmp_path)
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, f"{block.where}: `{script.strip()}` exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


def test_readme_keeps_its_first_two_commands():
    sh = [b.text for b in blocks(os.path.join(REPO, "README.md")) if b.lang == "sh"]
    assert sh[:2] == README_FIRST_COMMANDS


# ---- getting started, followed against a real daemon ----------------------------------------------


def test_getting_started(tmp_path):
    """The page's steps, in order: check, run on the shipped config, first rule, reload, the
    first ticket in the local store, the ticket resolved."""
    page = read(os.path.join(DOCS, "getting-started.md"))
    steps = ["forewarn check --config config/forewarn.yml",
             "forewarn run --config config/forewarn.yml --web.enable-lifecycle",
             "cp docs/examples/first-rule.yml rules/",
             "curl -X POST http://localhost:9469/-/reload",
             "forewarn tickets list --config config/forewarn.yml",
             "forewarn tickets show 1 --config config/forewarn.yml",
             "change `>= 0` to `< 0` in `rules/first-rule.yml`"]
    for s in steps:
        assert s in page, f"docs/getting-started.md no longer says {s!r}: update this test with the page"

    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(os.path.join(REPO, "config"), work / "config", symlinks=True)
    shutil.copytree(os.path.join(REPO, "rules"), work / "rules")
    _, env = scratch(tmp_path / "scratch")
    port = free_port()

    def forewarn(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agent", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=60)

    assert forewarn("check", "--config", "config/forewarn.yml").returncode == 0
    log = open(tmp_path / "agent.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", "config/forewarn.yml",
                             "--web.enable-lifecycle", "--web.listen-address", f"127.0.0.1:{port}"],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            return requests.get(url + "/-/ready", timeout=2).status_code == 200

        wait_for(ready, timeout=60, what="the agent ready")
        wait_for(lambda: "forewarn_forecast_breach_seconds{" in requests.get(url + "/metrics", timeout=10).text,
                 timeout=60, what="forecasts of the shipped rules on /metrics")
        assert os.path.isdir(work / "data"), "state is not in ./data"

        shutil.copy(os.path.join(DOCS, "examples", "first-rule.yml"), work / "rules")
        assert forewarn("check", "--config", "config/forewarn.yml").returncode == 0
        r = requests.post(url + "/-/reload", timeout=30)
        assert r.status_code == 200 and "config reloaded" in r.text

        # the page's commands ask the agent where the config says it listens (:9469); this
        # one listens elsewhere, so the test adds --url
        def listed() -> str:
            out = forewarn("tickets", "list", "--config", "config/forewarn.yml", "--url", url).stdout
            return out if "Forewarn works on" in out else ""

        out = wait_for(listed, timeout=60, interval=0.5, what="the first ticket in `forewarn tickets list`")
        assert re.search(r"^1\s+open\s", out, flags=re.M), out
        show = forewarn("tickets", "show", "1", "--config", "config/forewarn.yml", "--url", url)
        assert show.returncode == 0 and "Rule: ForewarnFirstTicket" in show.stdout and "open (#1)" in show.stdout

        rule = work / "rules" / "first-rule.yml"
        rule.write_text(rule.read_text().replace(">= 0", "< 0"))
        assert requests.post(url + "/-/reload", timeout=30).status_code == 200
        wait_for(lambda: re.search(r"^1\s+resolved\s", forewarn("tickets", "list", "--config", "config/forewarn.yml",
                                                                  "--url", url).stdout,
                                   flags=re.M), timeout=60, interval=0.5, what="the ticket resolved")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# ---- links -------------------------------------------------------------------------------------


def links(page: str) -> list[str]:
    text = prose(page)
    found = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    found += re.findall(r"<(https?://[^>]+)>", text)
    found += re.findall(r"(?<![(<\w])(https?://[^\s)>\]]+)", text)  # bare URLs, which GitHub links too
    return found


def _allowed_host(host: str) -> bool:
    host = host.lower()
    return (host in ("localhost", "127.0.0.1") or "." not in host or host.endswith(".example")
            or re.search(r"(^|\.)example\.(com|org|net)$", host) is not None or host in VENDOR_DOCS)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_links_resolve(page: str):
    bad = []
    for target in links(page):
        if target.startswith(("http://", "https://")):
            host = urlparse(target).hostname or ""
            if not _allowed_host(host):
                bad.append(f"{target}: outside the repository")
            continue
        if target.startswith(("mailto:", "file:")) or re.match(r"^[a-z]+:", target):
            bad.append(f"{target}: not a relative link")
            continue
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not dest.startswith(REPO + os.sep) and dest != REPO:
            bad.append(f"{target}: leaves the repository")
            continue
        if not os.path.exists(dest):
            bad.append(f"{target}: no such file")
            continue
        if anchor and dest.endswith(".md") and anchor not in slugs(dest):
            bad.append(f"{target}: no heading #{anchor} in {rel(dest)}")
    assert not bad, f"{rel(page)}:\n" + "\n".join(bad)


def test_links_checker_sees_links():
    page = os.path.join(DOCS, "README.md")
    assert "getting-started.md" in links(page) and "reference/configuration.md" in links(page)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_nothing_points_at_the_shared_design_notes(page: str):
    text = read(page)
    for word in ("DESIGN.md", "/work/", "shared docs"):
        assert word not in text, f"{rel(page)} mentions {word!r}: users cannot reach it"


def test_every_doc_page_is_reachable_from_the_index():
    index = os.path.join(DOCS, "README.md")
    reached, todo = set(), [index]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for t in links(page):
            path = t.partition("#")[0]
            if path.endswith(".md") and not path.startswith("http"):
                dest = os.path.normpath(os.path.join(os.path.dirname(page), path))
                if dest.startswith(DOCS):
                    todo.append(dest)
    unreached = sorted(rel(p) for p in PAGES if p.startswith(DOCS) and p not in reached)
    assert not unreached, f"pages no link leads to: {unreached}"


def test_example_files_are_used():
    """Every file in docs/examples/ is shown or run by a page (so none rots unseen)."""
    text = "".join(read(p) for p in PAGES)
    unused = [f for f in os.listdir(os.path.join(DOCS, "examples")) if f"examples/{f}" not in text]
    assert not unused, unused

