#!/usr/bin/env bash
# Make sure Graphviz's `dot` is installed: with apt-get when we are root, else say how.
set -euo pipefail
command -v dot >/dev/null 2>&1 && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Graphviz with apt-get ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
  exit 0
fi
echo "Graphviz's 'dot' is missing. Install it with 'sudo apt-get install graphviz'" \
     "(or 'brew install graphviz' / 'conda install -c conda-forge graphviz'); SVG graphs need it." >&2
exit 1
