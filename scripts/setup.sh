#!/usr/bin/env bash
# One-time (and idempotent) set-up for building and running this workspace.
#
#   Linux:  Debian packages cmake, libclang-dev, libopenblas-dev (installed when run as root,
#           otherwise the exact apt-get command is printed), and MLX's CPU build from the
#           pinned PyPI wheels (mlx-cpu + mlx) in a project-local virtualenv, .venv.
#   macOS:  cmake and libclang from Xcode/Homebrew, and the pinned `mlx` wheel (Metal) in .venv.
#
# Both README commands call this script. When everything is already in place it only checks a
# stamp and returns (well under 5 s). Set MLX_SETUP_FORCE=1 to redo the Python part.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
os=$(uname -s)
case "$os" in
  Linux) req="$root/scripts/requirements-mlx-linux.txt" ;;
  Darwin) req="$root/scripts/requirements-mlx-macos.txt" ;;
  *) echo "setup: unsupported OS '$os' (Linux x86-64 and macOS arm64 are supported)" >&2; exit 1 ;;
esac

say() { [ -n "${SETUP_QUIET:-}" ] || echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

# --- system packages -------------------------------------------------------------------------
if [ "$os" = Linux ]; then
  missing=()
  for pkg in cmake libclang-dev libopenblas-dev python3-venv; do
    # dpkg-query is cheap (a few ms); `python3-venv` only matters for the Debian system python.
    if [ "$pkg" = python3-venv ]; then
      python3 -c 'import venv, ensurepip' 2>/dev/null && continue
    fi
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then
      say "installing Debian packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      log=$(mktemp)
      if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        die "installing ${missing[*]} failed; run: $cmd"
      fi
      rm -f "$log"
    else
      die "missing Debian packages: ${missing[*]}. Run as root:  sudo sh -c '$cmd'"
    fi
  fi
else
  command -v cmake >/dev/null || die "cmake not found. Install it:  brew install cmake"
  xcrun --find clang >/dev/null 2>&1 || die "no Xcode command-line tools. Install them:  xcode-select --install"
fi

# --- MLX wheels in .venv ---------------------------------------------------------------------
stamp="$venv/.mlx-setup-stamp"
want=$(cat "$req" "$0" | cksum)
if [ -z "${MLX_SETUP_FORCE:-}" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && [ -x "$venv/bin/python" ]; then
  exit 0
fi

python=${PYTHON:-python3}
command -v "$python" >/dev/null || die "$python not found (Python 3.10+ is needed for the MLX wheels)"
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  "$python" -m venv "$venv" || die "could not create $venv with $python -m venv"
fi
say "installing MLX from $(basename "$req")"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2 \
  || die "pip install -r $req failed"
"$venv/bin/python" -m mlx --cmake-dir >/dev/null \
  || die "the installed mlx has no CMake package (python -m mlx --cmake-dir failed)"
echo "$want" > "$stamp"
say "MLX $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mlx"))') ready in .venv"
