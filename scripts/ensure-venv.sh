#!/usr/bin/env bash
# `python3 -m venv` failed: on Debian the venv module is a separate package. Install it when root.
set -euo pipefail
python=$1 venv=$2
rm -rf "$venv"
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  minor=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${minor}-venv" >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  exec "$python" -m venv "$venv"
fi
echo "Could not create a virtualenv: install python3-venv (sudo apt-get install python3-venv)" >&2
exit 1
