#!/usr/bin/env bash
# Is a newer application out? VERSION_URL=https://example.com/version.json ./ops/update-app.sh
# Prints the exact upgrade steps (venv and Docker); it changes nothing itself (docs/deploy.md#updates).
set -euo pipefail
: "${VERSION_URL:?set VERSION_URL to the version.json of the distribution server}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AIFACTORY="${AIFACTORY:-$repo/.venv/bin/aifactory}"
[ -x "$AIFACTORY" ] || AIFACTORY=aifactory
exec "$AIFACTORY" update app --from "$VERSION_URL"
