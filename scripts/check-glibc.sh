#!/usr/bin/env bash
# Fails when a binary needs a glibc newer than AWS Lambda's AL2023 (GLIBC_2.34).
# Usage: scripts/check-glibc.sh [MAX] BINARY...   (default MAX 2.34)
set -euo pipefail
max=2.34
if [[ ${1:-} =~ ^[0-9]+\.[0-9]+$ ]]; then max=$1; shift; fi
[ $# -gt 0 ] || { echo "usage: $0 [MAX] BINARY..." >&2; exit 2; }
status=0
for bin in "$@"; do
  need=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
  if [ -z "$need" ]; then
    echo "check-glibc: $bin references no versioned glibc symbols"
  elif [ "$(printf '%s\n%s\n' "$need" "$max" | sort -V | tail -n 1)" != "$max" ]; then
    echo "check-glibc: $bin needs GLIBC_$need > GLIBC_$max:" >&2
    objdump -T "$bin" | grep -E "GLIBC_(${need//./\\.})" | awk '{print "  " $NF}' | sort -u >&2
    status=1
  else
    echo "check-glibc: $bin needs at most GLIBC_$need (<= $max) ok"
  fi
done
exit $status
