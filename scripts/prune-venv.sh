#!/usr/bin/env bash
# Removes what an installed agent never runs from its virtualenv: the test suites that numpy,
# scipy, pandas and statsmodels ship inside their wheels (about 114 MB of a 409 MB install, see
# docs/operations.md), and, with --no-pip, pip and setuptools themselves. Nothing the agent
# imports lives in a `tests` directory; run it again after every upgrade (pip puts them back).
# Usage: scripts/prune-venv.sh VENV [--no-pip]
set -euo pipefail
venv=${1:?usage: scripts/prune-venv.sh VENV [--no-pip]}
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
before=$(du -sm "$venv" | cut -f1)
for pkg in numpy scipy pandas statsmodels patsy formulaic; do
  [ -d "$site/$pkg" ] && find "$site/$pkg" -type d -name tests -prune -exec rm -rf {} +
done
if [ "${2:-}" = "--no-pip" ]; then
  "$venv/bin/python" -m pip uninstall -y -q pip setuptools >/dev/null 2>&1 || true
fi
echo "$venv: ${before} MB -> $(du -sm "$venv" | cut -f1) MB"
