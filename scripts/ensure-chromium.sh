#!/usr/bin/env bash
# The browser test drives Debian's Chromium (Playwright cannot download its own here).
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Chromium with apt-get for the browser test ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "Chromium is missing: the browser test will be skipped (sudo apt-get install chromium)." >&2
