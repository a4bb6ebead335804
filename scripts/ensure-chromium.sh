#!/usr/bin/env bash
# Headless Chromium for the browser test (Debian's package); installed if missing (root).
set -euo pipefail
if command -v chromium >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "error: chromium is missing and not root: apt-get install chromium" >&2
  exit 1
fi
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
chromium --version
