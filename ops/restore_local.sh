#!/usr/bin/env bash
# Restore a backup: ./ops/restore_local.sh backups/backup_YYYYmmdd_HHMMSS [--force]
# Stop the factory first. DATA_DIR and the database must be empty unless --force (docs/deploy.md#backup).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BACKUP_DIR [--force]" >&2; exit 2; }
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AIFACTORY="${AIFACTORY:-$repo/.venv/bin/aifactory}"
[ -x "$AIFACTORY" ] || AIFACTORY=aifactory
exec "$AIFACTORY" restore "$@"
