#!/usr/bin/env bash
# Render an HTML report in a real headless Chromium: fail on any console message of level
# warning or error (or a page error), and save a screenshot to look at.
#   scripts/check-html.sh reports/r.html [screenshot.png]
# Needs Debian's chromium (apt-get install chromium).
set -euo pipefail
page=$(realpath "$1")
shot=$(realpath -m "${2:-${page%.html}.png}")
chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$chrome" ] || { echo "check-html: no chromium found (apt-get install chromium)" >&2; exit 1; }
profile=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$profile" "$log"' EXIT
"$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --enable-logging=stderr --v=0 \
  --window-size=1400,2400 --screenshot="$shot" "file://$page" 2>"$log" >/dev/null || true
# Console messages are logged as "CONSOLE(<line>)"; page errors as "Uncaught".
if grep -E 'CONSOLE|Uncaught|Failed to load resource' "$log"; then
  echo "check-html: $page logged the console messages above" >&2
  exit 1
fi
[ -s "$shot" ] || { echo "check-html: no screenshot was made; chromium said:" >&2; cat "$log" >&2; exit 1; }
echo "check-html: $page rendered with no console messages; screenshot $shot"
