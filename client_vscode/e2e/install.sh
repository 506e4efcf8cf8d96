#!/usr/bin/env bash
# Installs the real-VS-Code suite's tools into client_vscode/e2e/node_modules, offline except for the
# npm registry: code-server 4.100.3 (= VS Code 1.100.3; the newest whose engines field accepts node 20)
# and playwright-core. Needs gcc/make, node headers (nodedir), libkrb5-dev and ripgrep (see setup.sh).
# Idempotent: does nothing when the installed versions match package.json.
set -euo pipefail
cd "$(dirname "$0")"
MARK=node_modules/.overnight-e2e-installed
if [ -f "$MARK" ] && cmp -s "$MARK" package.json; then echo "e2e tools already installed"; exit 0; fi
# node-gyp builds against the installed node headers instead of downloading them
[ -d /usr/include/node ] && export npm_config_nodedir=/usr
export npm_config_yes=true            # node-pty's post-install runs `npx node-gyp` non-interactively
npm install --no-audit --no-fund --ignore-scripts --no-save
npm rebuild argon2 --foreground-scripts   # its prebuilt download fails offline; builds from source
cd node_modules/code-server/lib/vscode
npm install --omit=dev --no-audit --no-fund --ignore-scripts
# Debian's rg, so @vscode/ripgrep's post-install does not download one from GitHub
mkdir -p node_modules/@vscode/ripgrep/bin && ln -sf "$(command -v rg)" node_modules/@vscode/ripgrep/bin/rg
npm rebuild --foreground-scripts      # node-pty, spdlog, watcher, kerberos, ...
rm -rf node_modules.asar && ln -s node_modules node_modules.asar
(cd bin/remote-cli && ln -sf code-linux.sh code-server)
(cd bin/helpers && ln -sf browser-linux.sh browser.sh)
(cd extensions && npm install --omit=dev --no-audit --no-fund --foreground-scripts)
cd ../../../..
cp package.json "$MARK"
echo "e2e tools installed"
