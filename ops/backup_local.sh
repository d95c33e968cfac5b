#!/usr/bin/env bash
# Back up this factory while it runs: ./ops/backup_local.sh [DIR]  (default backups/backup_YYYYmmdd_HHMMSS)
# A thin wrapper of `aifactory backup` (docs/deploy.md#backup); run it where the node's .env is.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AIFACTORY="${AIFACTORY:-$repo/.venv/bin/aifactory}"
[ -x "$AIFACTORY" ] || AIFACTORY=aifactory
exec "$AIFACTORY" backup "$@"
