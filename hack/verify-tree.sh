#!/usr/bin/env bash
# Fails when git tracks a build output: any binary file (git's own test: a
# NUL byte near the start) or any file over 1 MB. Part of `make verify`.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((1024 * 1024))
bad=0
# git ls-files --eol says "i/-text" for what git itself takes as binary.
while read -r path; do
  echo "tracked binary file: $path (build outputs belong in bin/ or dist/, which are ignored)" >&2
  bad=1
done < <(git ls-files --eol | awk '$1 == "i/-text" { sub(/^[^\t]*\t/, ""); print }')
while IFS= read -r -d '' path; do
  [ -f "$path" ] || continue
  size=$(stat -c %s "$path")
  if [ "$size" -gt "$limit" ]; then
    echo "tracked file over 1 MB: $path ($size bytes)" >&2
    bad=1
  fi
done < <(git ls-files -z)
if [ "$bad" -ne 0 ]; then
  echo "remove it from git (git rm --cached PATH) and ignore it" >&2
  exit 1
fi
echo "no binaries or files over 1 MB tracked"
