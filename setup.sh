#!/usr/bin/env bash
# Set-up, one command: the Python environment (the daemon, the CLI, the tests), then the VS Code
# extension, its build tools and the real-VS-Code test tools (code-server, playwright-core, chromium).
# OVERNIGHT_SKIP_VSCODE=1 sets up the Python side only.
set -euo pipefail
cd "$(dirname "$0")"

python3 -m venv .venv
. .venv/bin/activate
pip install --upgrade pip
pip install torch==2.13.0
pip install -e '.[test]'

# bubblewrap seals every training run (README: "What a number from Overnight guarantees"); without it the loop
# refuses to run unless overnight.toml says sandbox = "none".
if ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap
  else
    echo "setup.sh: bubblewrap is missing; install it (sudo apt-get install bubblewrap, dnf install bubblewrap," \
         "pacman -S bubblewrap) or set sandbox = \"none\" in overnight.toml to run unsealed" >&2
  fi
fi

# Neovim: the second real editor of the test suite (tests/e2e/test_neovim.py; skipped, saying so, without it).
if ! command -v nvim >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends neovim
  else
    echo "setup.sh: Neovim is missing; the Neovim test will be skipped (sudo apt-get install neovim)" >&2
  fi
fi

[ "${OVERNIGHT_SKIP_VSCODE:-}" = 1 ] && exit 0

# System packages the VS Code suite needs: Debian's chromium (the browser playwright drives), fonts,
# kerberos headers and ripgrep (code-server's native modules build from source offline).
missing=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium fonts-liberation)
command -v rg >/dev/null || missing+=(ripgrep)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
command -v node >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup.sh: install these first: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

cd client_vscode
npm ci --no-audit --no-fund
npm run build
e2e/install.sh
