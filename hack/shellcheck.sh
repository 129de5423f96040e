#!/usr/bin/env bash
# Part of `make verify`: shellcheck over every shell script of the
# repository (tracked or new): *.sh and the files whose first line names
# bash or sh (hack/kubectl, hack/kv-curl, .ci/run, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts=()
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  case "$f" in
    *.sh) scripts+=("$f") ;;
    *) if head -n1 "$f" 2>/dev/null | grep -qE '^#!.*[/ ](ba|da)?sh( |$)'; then scripts+=("$f"); fi ;;
  esac
done < <(git ls-files -z --cached --others --exclude-standard)
# -x: follow `source`; the scripts name what they source relative to the
# repository root (# shellcheck source=hack/...), hence run from here.
shellcheck -x "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean"
