#!/usr/bin/env bash
# Regenerate the Python FlatBuffers bindings for schemas/tflite.fbs into
# tflq/_generated/tflite/.  Called by `make schema`.
#
#   FLATC=/path/to/flatc schemas/generate.sh     (default: flatc on PATH)
#
# flatc writes one package directory per namespace component
# (tflq/_generated/tflite) and drops empty __init__.py files on the way.
# It is run into a scratch directory so that it can never overwrite
# tflq/__init__.py; only the tflite/ package is copied into the tree.
set -euo pipefail

FLATC="${FLATC:-flatc}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCHEMA="$ROOT/schemas/tflite.fbs"
DEST="$ROOT/tflq/_generated"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$FLATC" --python --gen-object-api -o "$TMP" "$SCHEMA"

rm -rf "$DEST/tflite"
mkdir -p "$DEST"
cp -R "$TMP/tflq/_generated/tflite" "$DEST/tflite"
if [ ! -s "$DEST/__init__.py" ]; then
  echo '"""Generated from schemas/tflite.fbs by `make schema`; never edit by hand."""' > "$DEST/__init__.py"
fi
