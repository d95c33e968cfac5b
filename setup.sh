#!/usr/bin/env bash
# setup.sh: from `git clone` to a node of AI Factory Engine that runs in the background.
#
#   ./setup.sh                                   asks every question (role, database, bind address...)
#   ./setup.sh --non-interactive --role master   takes the defaults and the flags below, asks nothing
#   ./setup.sh --role worker --database-url postgresql://factory:PASS@MASTER:5432/factory
#
# Every answer is a flag or an environment variable (the flag wins):
#   --role master|worker          SETUP_ROLE          master runs everything, a worker only collects
#   --db sqlite|docker|url        SETUP_DB            SQLite file, PostgreSQL in a local container, or an
#                                                     existing server (--database-url)
#   --database-url URL            DATABASE_URL        postgresql://USER:PASS@HOST:PORT/DB
#   --install venv|docker         SETUP_INSTALL       a .venv here, or the Docker image (compose.yaml)
#   --host ADDR                   HOST                bind address (0.0.0.0 = the LAN)
#   --port N                      PORT                web port (default 8000)
#   --data-dir DIR                DATA_DIR            database file, shards, checkpoints, models
#   --admin-token TOKEN           ADMIN_API_TOKEN     default: generated once and shown once
#   --allowed-hosts LIST          ALLOWED_HOSTS       default: this machine's names and addresses
#   --db-ui-url URL               DB_UI_URL           the dashboard's DB Console link (Adminer)
#   --dir DIR                     SETUP_DIR           where .env is written and the node runs (default: here)
#   --venv DIR                    SETUP_VENV          the virtual environment (default: .venv here)
#   --python PYTHON               PYTHON              the interpreter for the venv (>= 3.11)
#   --user-service                                    a systemd user unit instead of a system one
#   --no-service                                      write .env and install, start nothing
#   --non-interactive (-y)        SETUP_NONINTERACTIVE=1
#
# Re-running is safe: answers already in .env are the defaults, the admin token and passwords are kept
# and never printed again, an installed venv is not reinstalled.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

ROLE="${SETUP_ROLE:-}"
DB_KIND="${SETUP_DB:-}"
DB_URL="${DATABASE_URL:-}"
INSTALL="${SETUP_INSTALL:-}"
BIND="${HOST:-}"
WEB_PORT="${PORT:-}"
DATA="${DATA_DIR:-}"
TOKEN="${ADMIN_API_TOKEN:-}"
HOSTS="${ALLOWED_HOSTS:-}"
UI_URL="${DB_UI_URL:-}"
NODE_DIR="${SETUP_DIR:-$REPO}"
VENV="${SETUP_VENV:-}"
PY="${PYTHON:-python3}"
NONINTERACTIVE="${SETUP_NONINTERACTIVE:-0}"
SERVICE=1
USER_SERVICE=0

die() {
    echo "setup.sh: $*" >&2
    exit 1
}
say() { echo "==> $*"; }

usage() {
    sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
    --role) ROLE="${2:?--role needs master or worker}"; shift ;;
    --db) DB_KIND="${2:?--db needs sqlite, docker or url}"; shift ;;
    --database-url) DB_URL="${2:?--database-url needs a URL}"; shift ;;
    --install) INSTALL="${2:?--install needs venv or docker}"; shift ;;
    --host) BIND="${2:?--host needs an address}"; shift ;;
    --port) WEB_PORT="${2:?--port needs a number}"; shift ;;
    --data-dir) DATA="${2:?--data-dir needs a folder}"; shift ;;
    --admin-token) TOKEN="${2:?--admin-token needs a value}"; shift ;;
    --allowed-hosts) HOSTS="${2:?--allowed-hosts needs a list}"; shift ;;
    --db-ui-url) UI_URL="${2:?--db-ui-url needs a URL}"; shift ;;
    --dir) NODE_DIR="${2:?--dir needs a folder}"; shift ;;
    --venv) VENV="${2:?--venv needs a folder}"; shift ;;
    --python) PY="${2:?--python needs an interpreter}"; shift ;;
    --user-service) USER_SERVICE=1 ;;
    --no-service) SERVICE=0 ;;
    -y | --non-interactive) NONINTERACTIVE=1 ;;
    -h | --help) usage 0 ;;
    *) echo "setup.sh: unknown option $1" >&2; usage 2 >&2 ;;
    esac
    shift
done

mkdir -p "$NODE_DIR"
NODE_DIR="$(cd "$NODE_DIR" && pwd)"
ENV_FILE="$NODE_DIR/.env"
VENV="${VENV:-$REPO/.venv}"

# --- .env: read what an earlier run wrote, then update those keys in place ---------------------------
env_get() { # KEY -> the value in .env, or nothing
    [ -f "$ENV_FILE" ] || return 0
    sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

env_set() { # KEY VALUE: replace the line, or append it; other lines are kept as they are
    local key="$1" value="$2" tmp
    tmp="$(mktemp "$ENV_FILE.XXXXXX")"
    if [ -f "$ENV_FILE" ]; then
        grep -v "^$key=" "$ENV_FILE" >"$tmp" || true
    fi
    printf '%s=%s\n' "$key" "$value" >>"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$ENV_FILE"
}

interactive() { [ "$NONINTERACTIVE" != 1 ] && [ -r /dev/tty ] && { : </dev/tty; } 2>/dev/null; }

ask() { # QUESTION DEFAULT -> the answer (the default when not interactive or left blank)
    local answer=""
    if interactive; then
        printf '%s [%s]: ' "$1" "$2" >/dev/tty
        read -r answer </dev/tty || true
    fi
    echo "${answer:-$2}"
}

random_secret() {
    "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' 2>/dev/null ||
        od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

# --- the answers: flags, then .env, then questions with defaults -------------------------------------
# A flag or variable answers its question; otherwise it is asked, with the earlier answer as default.
if [ -z "$ROLE" ]; then
    ROLE="$(env_get SYSTEM_ROLE)"
    ROLE="$(ask "Role of this node: master (everything) or worker (collects for a master)" "${ROLE:-master}")"
fi
case "$ROLE" in master | worker) ;; *) die "--role must be master or worker, not '$ROLE'" ;; esac

PREVIOUS_URL="$(env_get DATABASE_URL)"
DB_URL="${DB_URL:-$PREVIOUS_URL}"
if [ -z "$DB_KIND" ]; then
    DB_KIND="$(env_get SETUP_DB)"
    if [ -z "$DB_KIND" ]; then
        case "$DB_URL" in
        postgresql://* | postgres://*) DB_KIND=url ;;
        *) if [ "$ROLE" = worker ]; then DB_KIND=url; else DB_KIND=sqlite; fi ;;
        esac
    fi
    DB_KIND="$(ask "Database: sqlite (one machine), docker (PostgreSQL + Adminer here) or url (an existing PostgreSQL)" "$DB_KIND")"
fi
case "$DB_KIND" in sqlite | docker | url) ;; *) die "--db must be sqlite, docker or url, not '$DB_KIND'" ;; esac
if [ "$ROLE" = worker ] && [ "$DB_KIND" != url ]; then
    die "a worker joins its master's PostgreSQL: give --db url --database-url postgresql://USER:PASS@MASTER:5432/DB"
fi
if [ "$DB_KIND" = url ]; then
    if [ -z "$DB_URL" ] || [ "$DB_URL" = "${DB_URL#postgres}" ]; then
        DB_URL="$(ask "PostgreSQL URL (postgresql://USER:PASS@HOST:5432/DB)" "")"
    fi
    case "$DB_URL" in
    postgresql://* | postgres://*) ;;
    *) die "--database-url must be postgresql://USER:PASS@HOST:PORT/DB (got '${DB_URL:-nothing}')" ;;
    esac
fi

if [ -z "$INSTALL" ]; then
    INSTALL="$(env_get SETUP_INSTALL)"
    INSTALL="$(ask "Install: venv (Python here) or docker (the image, compose.yaml)" "${INSTALL:-venv}")"
fi
case "$INSTALL" in venv | docker) ;; *) die "--install must be venv or docker, not '$INSTALL'" ;; esac

if [ "$INSTALL" = docker ]; then
    BIND=0.0.0.0 # inside the container; the published port decides who can reach it
elif [ -z "$BIND" ]; then
    BIND="$(env_get HOST)"
    if [ "$ROLE" = master ]; then
        BIND="$(ask "Bind address: 127.0.0.1 (this machine only) or 0.0.0.0 (the LAN)" "${BIND:-127.0.0.1}")"
    fi
fi
BIND="${BIND:-127.0.0.1}"
WEB_PORT="${WEB_PORT:-$(env_get PORT)}"
WEB_PORT="${WEB_PORT:-8000}"
case "$WEB_PORT" in '' | *[!0-9]*) die "--port must be a number, not '$WEB_PORT'" ;; esac
DATA="${DATA:-$(env_get DATA_DIR)}"
if [ "$INSTALL" = docker ]; then DATA=/data; fi
DATA="${DATA:-$NODE_DIR/data}"

# --- checks: each missing piece with what to do about it ---------------------------------------------
check_docker() {
    if ! command -v docker >/dev/null 2>&1; then
        echo "setup.sh: Docker is not installed (no 'docker' on PATH), and --db docker / --install docker need it." >&2
        echo "  Install Docker Engine (https://docs.docker.com/engine/install/) and run ./setup.sh again," >&2
        echo "  or use the path without Docker: ./setup.sh --install venv --db sqlite" >&2
        echo "  (or --db url --database-url postgresql://... for an existing PostgreSQL)." >&2
        return 1
    fi
    if ! docker compose version >/dev/null 2>&1; then
        echo "setup.sh: 'docker compose' is missing (the Compose plugin); install docker-compose-plugin." >&2
        return 1
    fi
    if ! docker info >/dev/null 2>&1; then
        echo "setup.sh: the Docker daemon does not answer ('docker info' failed): start it" >&2
        echo "  (sudo systemctl start docker) or add $(id -un) to the docker group." >&2
        return 1
    fi
}

if [ "$DB_KIND" = docker ] || [ "$INSTALL" = docker ]; then
    if ! check_docker; then
        if interactive && [ "$(ask "Continue without Docker (venv install, SQLite)? y/n" y)" = y ]; then
            DB_KIND=sqlite
            INSTALL=venv
            BIND="${BIND/0.0.0.0/127.0.0.1}"
            DATA="$NODE_DIR/data"
        else
            exit 3
        fi
    fi
fi

if [ "$INSTALL" = venv ]; then
    command -v "$PY" >/dev/null 2>&1 || die "$PY not found: install Python 3.11 or newer (or pass --python)"
    "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
        die "$("$PY" -V 2>&1) is too old: AI Factory Engine needs Python >= 3.11 (pass --python python3.11)"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -c 'import venv, ensurepip' 2>/dev/null ||
            die "Python's venv module is missing: install python3-venv (Debian/Ubuntu: sudo apt-get install python3-venv)"
        command -v make >/dev/null 2>&1 || die "make is missing: install it (Debian/Ubuntu: sudo apt-get install make)"
    fi
fi

# --- .env ----------------------------------------------------------------------------------------------
first_token=0
if [ -z "$TOKEN" ]; then TOKEN="$(env_get ADMIN_API_TOKEN)"; fi
if [ -z "$TOKEN" ] && [ "$ROLE" = master ]; then # a worker serves no API: it needs no token
    TOKEN="$(random_secret)"
    first_token=1
fi

first_password=0
PG_PASSWORD="$(env_get POSTGRES_PASSWORD)"
if [ "$DB_KIND" = docker ]; then
    if [ -z "$PG_PASSWORD" ]; then
        PG_PASSWORD="$(random_secret)"
        first_password=1
    fi
    # The container's name inside compose's network; the published port from a venv install.
    pg_host=127.0.0.1
    [ "$INSTALL" = docker ] && pg_host=postgres
    DB_URL="postgresql://factory:$PG_PASSWORD@$pg_host:5432/factory"
elif [ "$DB_KIND" = sqlite ]; then
    DB_URL=""
fi

this_host="$(hostname 2>/dev/null || echo localhost)"
lan_addresses="$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -v ':' | grep -v '^$' || true)"
lan_ip="$(echo "$lan_addresses" | head -n 1)"
if [ -z "$HOSTS" ]; then HOSTS="$(env_get ALLOWED_HOSTS)"; fi
if [ -z "$HOSTS" ] && { [ "$BIND" != 127.0.0.1 ] && [ "$BIND" != localhost ]; }; then
    # On the LAN (or behind Docker's published port) the dashboard is opened by name or address.
    HOSTS="$(printf '%s\n' "$this_host" "$(hostname -f 2>/dev/null || true)" "$lan_addresses" |
        grep -v '^$' | sort -u | paste -sd, -)"
fi
if [ -z "$UI_URL" ]; then UI_URL="$(env_get DB_UI_URL)"; fi
if [ -z "$UI_URL" ] && [ "$DB_KIND" = docker ] && [ "$ROLE" = master ]; then
    # Adminer's port on this machine, as a browser elsewhere on the LAN reaches it.
    UI_URL="http://${lan_ip:-localhost}:${ADMINER_PORT:-8080}"
fi

if [ -f "$ENV_FILE" ]; then say "updating $ENV_FILE (other lines are kept)"; else say "writing $ENV_FILE"; fi
env_set SYSTEM_ROLE "$ROLE"
env_set SETUP_DB "$DB_KIND"
env_set SETUP_INSTALL "$INSTALL"
env_set DATABASE_URL "$DB_URL"
env_set DATA_DIR "$DATA"
env_set HOST "$BIND"
env_set PORT "$WEB_PORT"
env_set ADMIN_API_TOKEN "$TOKEN"
env_set ALLOWED_HOSTS "$HOSTS"
env_set DB_UI_URL "$UI_URL"
if [ "$DB_KIND" = docker ]; then env_set POSTGRES_PASSWORD "$PG_PASSWORD"; fi

if [ "$first_token" = 1 ]; then
    echo
    echo "    Admin token (x-admin-token header, the dashboard asks for it): $TOKEN"
    echo "    It is shown this once; it stays in $ENV_FILE (mode 600)."
    echo
elif [ -n "$TOKEN" ]; then
    say "admin token: kept (in $ENV_FILE, not shown again)"
fi
if [ "$first_password" = 1 ]; then
    echo "    PostgreSQL password of user 'factory' (Adminer's login): $PG_PASSWORD  (shown this once)"
fi

# --- install -------------------------------------------------------------------------------------------
compose_file="$REPO/compose.yaml"
[ "$ROLE" = worker ] && compose_file="$REPO/compose.worker.yaml"
if [ "$INSTALL" = venv ]; then
    if "$VENV/bin/aifactory" --version >/dev/null 2>&1; then
        say "$VENV is installed already ($("$VENV/bin/aifactory" --version))"
    else
        say "installing into $VENV (PyTorch: CPU build unless an NVIDIA GPU is present)"
        make -C "$REPO" install PYTHON="$PY" VENV="$VENV"
    fi
    if [ "$DB_KIND" = url ]; then
        # A precise message now beats a node that restarts forever on a wrong URL.
        DATABASE_URL="$DB_URL" "$VENV/bin/python" - <<'EOF' || die "fix --database-url and run ./setup.sh again"
import os, sys
from aifactory.db.database import Database, DatabaseError
try:
    Database(os.environ["DATABASE_URL"], pool_size=1).check()
except DatabaseError as exc:
    sys.exit(f"setup.sh: {exc}")
EOF
        say "PostgreSQL answers"
    fi
    (cd "$NODE_DIR" && "$VENV/bin/aifactory" config >/dev/null) ||
        die "the settings in $ENV_FILE are not valid (message above)"
else
    say "building the image (docker compose -f $compose_file build)"
    docker compose -f "$compose_file" --env-file "$ENV_FILE" build
fi

# --- start ---------------------------------------------------------------------------------------------
if [ "$SERVICE" = 0 ]; then
    say "not starting a service (--no-service). Start the node with:"
    if [ "$INSTALL" = venv ]; then
        echo "    cd $NODE_DIR && $VENV/bin/aifactory $([ "$ROLE" = master ] && echo up || echo worker)"
    else
        echo "    docker compose -f $compose_file --env-file $ENV_FILE up -d"
    fi
    exit 0
fi
if [ "$INSTALL" = docker ]; then
    docker compose -f "$compose_file" --env-file "$ENV_FILE" up -d
    say "started with Docker (restart: unless-stopped; it comes back after a reboot)"
elif [ "$DB_KIND" = docker ]; then
    docker compose -f "$compose_file" --env-file "$ENV_FILE" up -d postgres adminer
fi
if [ "$INSTALL" = venv ]; then
    service_flags=()
    if [ "$USER_SERVICE" = 1 ] || [ "$(id -u)" != 0 ]; then service_flags+=(--user); fi
    (cd "$NODE_DIR" && "$VENV/bin/aifactory" service install "${service_flags[@]}")
fi
if [ "$ROLE" = master ]; then
    say "dashboard: http://${lan_ip:-127.0.0.1}:$WEB_PORT/ (bound to $BIND)"
    [ -n "$UI_URL" ] && say "database console (Adminer): $UI_URL"
fi
say "done. Check it with: BASE_URL=http://127.0.0.1:$WEB_PORT ./ops/e2e_pipeline.sh"
