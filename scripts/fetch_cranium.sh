#!/usr/bin/env bash
# Unpack the real head CT ("Cranium") that Debian's invesalius-examples ships, without installing it.
# Puts Cranium.inv3 in $PARANASAL_DATA (default /tmp/paranasal-data). Needs apt (Debian/Ubuntu).
set -euo pipefail
dest=${PARANASAL_DATA:-/tmp/paranasal-data}
mkdir -p "$dest"
[ -f "$dest/Cranium.inv3" ] && exit 0
if [ -f /usr/share/doc/invesalius-examples/examples/Cranium.inv3 ]; then
  cp /usr/share/doc/invesalius-examples/examples/Cranium.inv3 "$dest/"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && { apt-get download invesalius-examples >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get download invesalius-examples >/dev/null; }; } )
dpkg -x "$work"/invesalius-examples_*.deb "$work/x"
cp "$work/x/usr/share/doc/invesalius-examples/examples/Cranium.inv3" "$dest/"
echo "fetched $dest/Cranium.inv3"
