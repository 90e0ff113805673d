#!/usr/bin/env bash
# Regenerates docs/backtest-report.png: the HTML report of `forewarn backtest` on the example in
# docs/backtest.md (docs/examples/disk-rules.yml over docs/examples/disk.csv), rendered by
# Debian's headless Chromium (installed with apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v chromium >/dev/null; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PYTHONPATH="$PWD" "$PY" -m agent backtest --rules docs/examples/disk-rules.yml --input docs/examples/disk.csv \
  --report "$tmp/report.html" > /dev/null
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1140,1500 \
  --screenshot="$tmp/shot.png" "file://$tmp/report.html" 2>/dev/null
cp "$tmp/shot.png" docs/backtest-report.png
echo "wrote docs/backtest-report.png"
