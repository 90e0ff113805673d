#!/usr/bin/env bash
# Regenerates docs/trends-report.png: the HTML report of `forewarn trends` on the evaluation set
# (seed 2, a year of incidents), rendered by Debian's headless Chromium.
# Needs: apt-get install --no-install-recommends chromium fonts-dejavu-core
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PYTHONPATH="$PWD" "$PY" -c "
import sys; sys.path.insert(0, '.')
from benchmarks.trends_data import generate
open('$tmp/history.csv', 'wb').write(generate(2, 5000).to_csv())
"
(cd "$tmp" && PYTHONPATH="$OLDPWD" "$PY" -m agent trends --input history.csv --since 2025-01-06T00:00:00Z --until 2026-01-05T00:00:00Z \
  --report report.html > /dev/null)
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1140,2560 \
  --screenshot="$tmp/shot.png" "file://$tmp/report.html" 2>/dev/null
cp "$tmp/shot.png" docs/trends-report.png
echo "wrote docs/trends-report.png"
