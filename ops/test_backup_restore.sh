#!/usr/bin/env bash
# Prove that backups of this factory restore: take one, restore it into a scratch DATA_DIR (and, for
# PostgreSQL, the empty database in RESTORE_DATABASE_URL), read it back, remove the scratch copy.
# The live data is never touched. Run it where the node's .env is.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AIFACTORY="${AIFACTORY:-$repo/.venv/bin/aifactory}"
[ -x "$AIFACTORY" ] || AIFACTORY=aifactory
scratch="$(mktemp -d "${TMPDIR:-/tmp}/aifactory-restore-test.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

backend="$("$AIFACTORY" config --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["settings"]["DATABASE_URL"] or "sqlite")')"
case "$backend" in
postgres*)
    [ -n "${RESTORE_DATABASE_URL:-}" ] || {
        echo "$0: the factory runs on PostgreSQL: set RESTORE_DATABASE_URL to an empty database to restore into" >&2
        exit 2
    }
    target_url="$RESTORE_DATABASE_URL"
    ;;
*) target_url="" ;;
esac

"$AIFACTORY" backup "$scratch/backup"
(
    cd "$scratch"
    DATA_DIR="$scratch/data" DATABASE_URL="$target_url" "$AIFACTORY" restore "$scratch/backup"
    DATA_DIR="$scratch/data" DATABASE_URL="$target_url" "$AIFACTORY" dataset info
)
echo "backup and restore OK (scratch copy in $scratch removed)"
