#!/usr/bin/env bash
# Builds every JavaScript policy plugin src/NAME.js into dist/NAME.wasm with the
# componentize-qjs pinned in package-lock.json (run `npm ci` here first).
#
# Each source names its WIT world (see ../../wit/policy.wit) on a line
# `// world: NAME`. `--sync` embeds the non-async QuickJS runtime: without it the
# component needs the component-model async feature, which the operator's host does
# not enable, and it fails to load.
#
# Usage: plugins/js/build.sh [--out-dir DIR] [NAME...]
#   NAME: a source under src/ without `.js` (default: every src/*.js), or the path of a
#         `.js` file relative to plugins/js (e.g. testing/mapping-probe.js)
#   DIR:  where NAME.wasm goes (default: plugins/js/dist; relative to the current directory)
set -euo pipefail

out=
if [ "${1:-}" = --out-dir ]; then
  [ $# -ge 2 ] || { echo "--out-dir needs a directory" >&2; exit 2; }
  mkdir -p "$2"
  out=$(cd "$2" && pwd)
  shift 2
fi
cd "$(dirname "$0")"
out=${out:-$PWD/dist}

bin=node_modules/.bin/componentize-qjs
if [ ! -x "$bin" ]; then
  echo "componentize-qjs is not installed: run \`npm ci\` in plugins/js (needs Node.js >= 18 and npm)" >&2
  exit 1
fi

if [ $# -eq 0 ]; then
  set -- src/*.js
else
  for arg; do
    shift
    case "$arg" in
      *.js) set -- "$@" "$arg" ;;
      *) set -- "$@" "src/$arg.js" ;;
    esac
  done
fi

mkdir -p "$out"
for js in "$@"; do
  name=$(basename "$js" .js)
  if [ ! -f "$js" ]; then
    echo "$js: no such plugin source" >&2
    exit 1
  fi
  world=$(sed -n 's|^// world: *\([a-z0-9-]*\).*|\1|p' "$js" | head -n 1)
  if [ -z "$world" ]; then
    echo "$js: no '// world: NAME' line naming its WIT world" >&2
    exit 1
  fi
  # Write aside and rename, so that a reader (or a concurrent build) never sees a
  # partial file.
  tmp=$(mktemp "$out/.$name.XXXXXX")
  if ! "$bin" --wit ../../wit --world "$world" --js "$js" --sync -o "$tmp" >/dev/null; then
    rm -f "$tmp"
    echo "building $js (world $world) failed" >&2
    exit 1
  fi
  chmod 644 "$tmp"
  mv -f "$tmp" "$out/$name.wasm"
  echo "$out/$name.wasm ($(wc -c <"$out/$name.wasm") bytes, world $world)"
done
