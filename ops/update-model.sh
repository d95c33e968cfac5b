#!/usr/bin/env bash
# Install the model a distribution server publishes: VERSION_URL=https://example.com/version.json ./ops/update-model.sh [--promote]
# A wrapper of `aifactory update model --from "$VERSION_URL"` (docs/deploy.md#updates).
set -euo pipefail
: "${VERSION_URL:?set VERSION_URL to the version.json of the distribution server}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AIFACTORY="${AIFACTORY:-$repo/.venv/bin/aifactory}"
[ -x "$AIFACTORY" ] || AIFACTORY=aifactory
exec "$AIFACTORY" update model --from "$VERSION_URL" "$@"
