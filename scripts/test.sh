#!/usr/bin/env bash
# Installs everything the test suite needs on Debian (system packages for the real servers the
# tests start, a virtualenv with the package and its test extras), then checks the code (ruff,
# mypy, the import rules of ARCHITECTURE.md) and runs the whole suite. It stops at the first
# check that fails: a lint or type error fails the test command like a failing test does.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(prometheus prometheus-node-exporter prometheus-alertmanager systemd dbus-daemon python3-venv openssl chromium faketime)
APT_PACKAGES_RT=(request-tracker5 rt5-db-sqlite rt5-standalone dbconfig-no-thanks dma w3m curl)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}" "${APT_PACKAGES_RT[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  # RT's and dma's packages ask debconf questions; answer them so the install is unattended.
  # The tests configure their own RT instance (tests/rt_server.py); these only keep apt quiet.
  as_root debconf-set-selections <<'EOF_DEBCONF' || true
request-tracker5 request-tracker5/rtname string rt-ci.localhost
request-tracker5 request-tracker5/organization string ci.localhost
request-tracker5 request-tracker5/webbaseurl string http://127.0.0.1:8080
request-tracker5 request-tracker5/correspondaddress string rt@localhost
request-tracker5 request-tracker5/commentaddress string rt-comment@localhost
request-tracker5 request-tracker5/handle-siteconfig-permissions boolean true
request-tracker5 request-tracker5/install-cronjobs boolean false
dma dma/mailname string localhost
dma dma/relayhost string
EOF_DEBCONF
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Where systemd runs, the Debian services would hold ports; the tests start their own servers.
if [ -d /run/systemd/system ]; then
  for svc in prometheus prometheus-node-exporter prometheus-alertmanager; do
    as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

VENV=${FOREWARN_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q -e '.[test]'
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export PATH="$VENV/bin:$PATH"

echo "ruff check agent tests benchmarks"
"$VENV/bin/ruff" check agent tests benchmarks
echo "mypy (configured in pyproject.toml)"
"$VENV/bin/mypy"
echo "import rules (tests/test_architecture.py)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_architecture.py
exec "$VENV/bin/python" -m pytest -q "$@"
