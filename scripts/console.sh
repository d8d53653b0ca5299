#!/usr/bin/env bash
# Build the web console (console/ → console/dist), which the api crate
# embeds at compile time: npm packages from the lock file, then TypeScript
# checked and bundled by Vite. Skipped when dist is newer than every source.
set -euo pipefail
cd "$(dirname "$0")/../console"
command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "the console's build and browser tests need Node.js 20 or newer (found $(node --version));" \
         "Debian 13's nodejs package or NodeSource's provide it" >&2
    exit 1
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
if [ -f dist/index.html ] && [ -z "$(find src index.html package-lock.json vite.config.ts tsconfig.json public -newer dist/index.html 2>/dev/null | head -1)" ]; then
    exit 0
fi
npm run build --silent
