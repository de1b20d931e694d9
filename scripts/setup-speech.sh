#!/usr/bin/env bash
# Installs what fixtures/make_speech.py needs to synthesize speech: espeak-ng and sox from
# Debian's packages (bookworm: espeak-ng 1.51+dfsg-10+deb12u2, sox 14.4.2+git20190427-3.5, the
# versions whose output the committed references were made from; other versions give other
# bytes, which the tests that read the recordings detect by sha256).
set -euo pipefail
if command -v espeak-ng >/dev/null && command -v sox >/dev/null; then
  echo "espeak-ng $(dpkg-query -W -f '${Version}' espeak-ng 2>/dev/null || echo '?'), sox $(dpkg-query -W -f '${Version}' sox 2>/dev/null || echo '?') already installed"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -q
$sudo apt-get install -y -q espeak-ng sox
