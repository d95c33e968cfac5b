#!/usr/bin/env bash
# The whole pipeline of a running factory, end to end:
#   BASE_URL=http://127.0.0.1:8000 ADMIN_API_TOKEN=... ./ops/e2e_pipeline.sh
# health → Ignite → the corpus grows → a dataset version → training steps → an evaluation → a generation
# over the native, OpenAI and Ollama APIs → Stop. Each step prints PASS or FAIL with its time; the script
# stops with exit status 1 at the first failure. The factory needs something to collect (WEB_SEED_URLS or
# the sources) and leaves it running afterwards only if the Stop step fails.
#
#   ADMIN_API_TOKEN    the admin token (Ignite, Stop, the evaluation); also sent on reads
#   API_KEY            one of API_KEYS, when the OpenAI/Ollama APIs need a key
#   E2E_TIMEOUT_SEC    how long each step may wait (default 600)
#   E2E_SKIP_EVAL=1    leave out the evaluation step
#   E2E_PROMPT         the prompt of the generation steps (default "The factory")
set -uo pipefail

BASE_URL="${BASE_URL:-http://127.0.0.1:8000}"
BASE_URL="${BASE_URL%/}"
TOKEN="${ADMIN_API_TOKEN:-}"
KEY="${API_KEY:-}"
TIMEOUT="${E2E_TIMEOUT_SEC:-600}"
PROMPT="${E2E_PROMPT:-The factory}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/e2e.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
BODY="$WORK/body"
STARTED="$(date +%s.%N)"
STEPS=0

command -v curl >/dev/null || { echo "e2e: curl is required" >&2; exit 2; }
command -v python3 >/dev/null || { echo "e2e: python3 is required (JSON)" >&2; exit 2; }

# api METHOD PATH [JSON]: the status code on stdout, the body in $BODY.
api() {
    local headers=(-H "accept: application/json")
    [ -n "$TOKEN" ] && headers+=(-H "x-admin-token: $TOKEN")
    [ -n "$KEY" ] && headers+=(-H "authorization: Bearer $KEY")
    if [ $# -ge 3 ]; then
        curl -sS -m 120 -o "$BODY" -w '%{http_code}' -X "$1" "${headers[@]}" \
            -H "content-type: application/json" --data "$3" "$BASE_URL$2" 2>"$WORK/curl.err" || true  # on failure curl prints 000 itself
    else
        curl -sS -m 120 -o "$BODY" -w '%{http_code}' -X "$1" "${headers[@]}" "$BASE_URL$2" 2>"$WORK/curl.err" || true  # on failure curl prints 000 itself
    fi
}

# json EXPRESSION: evaluate a Python expression over the last body (`d`); prints its value.
json() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[2]))
value = eval(sys.argv[1], {"d": d, "sum": sum, "len": len, "max": max})
print(value if not isinstance(value, (dict, list)) else json.dumps(value))' "$1" "$BODY" 2>/dev/null
}

why() { # the reason of the last failed request, one line
    if [ -s "$WORK/curl.err" ]; then head -c 300 "$WORK/curl.err"; else head -c 300 "$BODY" 2>/dev/null; fi
}

# wait_until SECONDS COMMAND...: run COMMAND every 2 s until it succeeds (0), fails for good (2) or the
# time is up.
wait_until() {
    local deadline=$(($(date +%s) + $1)) rc
    shift
    while :; do
        "$@"
        rc=$?
        [ "$rc" -eq 0 ] && return 0
        [ "$rc" -eq 2 ] && return 2
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 2
    done
}

step() { # step NAME COMMAND...
    local name="$1" began elapsed
    shift
    began="$(date +%s.%N)"
    DETAIL=""
    if "$@"; then
        elapsed="$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):7.1f}s')" "$began" "$(date +%s.%N)")"
        STEPS=$((STEPS + 1))
        printf 'PASS %s  %-28s %s\n' "$elapsed" "$name" "$DETAIL"
    else
        elapsed="$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):7.1f}s')" "$began" "$(date +%s.%N)")"
        printf 'FAIL %s  %-28s %s\n' "$elapsed" "$name" "$DETAIL"
        exit 1
    fi
}

# --- the steps -----------------------------------------------------------------------------------------
health() {
    local code
    code="$(api GET /healthz)"
    DETAIL="HTTP $code $(why)"
    [ "$code" = 200 ] && [ "$(json 'd["status"]')" = ok ]
}

documents_now() {
    [ "$(api GET /api/status)" = 200 ] || return 1
    json 'sum(v for k, v in d["counters"].items() if k.startswith("docs.stored."))'
}

running_engines() { # the engines asked to run, "node/name" sorted, one line
    json '" ".join(sorted(e["node_id"] + "/" + e["name"] for e in d["engines"] if e["desired"] == "running"))'
}

ignite() {
    local code
    BEFORE_DOCS="$(documents_now || echo 0)"
    # Engines that run without Ignite (inference) keep running after Stop; the others must stop.
    ALWAYS_RUNNING="$(running_engines)"
    code="$(api POST /api/control '{"action": "start"}')"
    DETAIL="HTTP $code $(why)"
    [ "$code" = 200 ] || return 1
    DETAIL="$(json 'd["message"]')"
}

corpus_grew() {
    local now
    now="$(documents_now)" || return 1
    DETAIL="documents $BEFORE_DOCS -> $now"
    [ "${now:-0}" -gt "${BEFORE_DOCS:-0}" ]
}

dataset_version() {
    [ "$(api GET '/api/datasets?limit=1')" = 200 ] || return 1
    local tag
    tag="$(json 'd["versions"][0]["tag"] if d["versions"] else ""')"
    DETAIL="version ${tag:-none yet}"
    [ -n "$tag" ]
}

training_steps() {
    [ "$(api GET '/api/metrics/training?range=all')" = 200 ] || return 1
    local steps
    steps="$(json 'max([p["step"] for p in d["series"]] or [0])')"
    DETAIL="step ${steps:-0}"
    [ "${steps:-0}" -gt 0 ]
}

evaluation_started() {
    local code
    code="$(api POST /api/evals/run '{"model": "latest"}')"
    DETAIL="HTTP $code $(why)"
    [ "$code" = 202 ] || [ "$code" = 409 ] # 409: one is running already, wait for it
}

evaluation_done() {
    [ "$(api GET /api/evals/status)" = 200 ] || return 1
    local status
    status="$(json 'd["job"]["status"] if d["job"] else "none"')"
    DETAIL="job $status $(json 'd["job"].get("message") or d["job"].get("error") or "" if d["job"] else ""')"
    [ "$status" = failed ] && return 2
    [ "$status" = "done" ]
}

evaluation() {
    evaluation_started || return 1
    wait_until "$TIMEOUT" evaluation_done || return 1
    [ "$(api GET '/api/evals?limit=1')" = 200 ] && DETAIL="score $(json 'd["runs"][0]["score"]')"
}

generated() { # generated PATH JSON EXPRESSION-FOR-THE-TEXT; 503 (the model is loading) is retried
    local code text
    code="$(api POST "$1" "$2")"
    DETAIL="HTTP $code $(why)"
    [ "$code" = 503 ] && return 1
    [ "$code" = 200 ] || return 2
    text="$(json "$3")" || return 2
    DETAIL="$(printf '%q' "${text:0:60}")"
    [ -n "$text" ]
}

prompt_json="$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$PROMPT")"

native() { generated /api/generate "{\"prompt\": $prompt_json, \"max_tokens\": 8, \"rag\": false}" 'd["text"]'; }
openai() {
    generated /v1/completions "{\"model\": \"latest\", \"prompt\": $prompt_json, \"max_tokens\": 8}" \
        'd["choices"][0]["text"] or d["choices"][0]["finish_reason"]'
}
ollama() {
    generated /ollama/api/generate \
        "{\"model\": \"latest\", \"prompt\": $prompt_json, \"stream\": false, \"options\": {\"num_predict\": 8}}" \
        'd["response"] or d["done_reason"]'
}

stopped() {
    [ "$(api GET /api/status)" = 200 ] || return 1
    local running
    running="$(running_engines)"
    DETAIL="still running: ${running:-nothing} (independent of Ignite: ${ALWAYS_RUNNING:-none})"
    [ "$running" = "$ALWAYS_RUNNING" ] || return 1
    # ...and they have really stopped, not only been asked to.
    [ "$(json 'sum(1 for e in d["engines"] if e["desired"] != "running" and e["phase"] in ("running", "stopping"))')" = 0 ]
}

stop() {
    local code
    code="$(api POST /api/control '{"action": "stop"}')"
    DETAIL="HTTP $code $(why)"
    [ "$code" = 200 ] || return 1
    wait_until "$TIMEOUT" stopped
}

echo "end-to-end check of $BASE_URL"
step "health" health
step "Ignite" ignite
step "corpus grows" wait_until "$TIMEOUT" corpus_grew
step "dataset version" wait_until "$TIMEOUT" dataset_version
step "training steps" wait_until "$TIMEOUT" training_steps
if [ "${E2E_SKIP_EVAL:-0}" != 1 ]; then step "evaluation" evaluation; fi
step "generate (native API)" wait_until "$TIMEOUT" native
step "completions (OpenAI API)" wait_until "$TIMEOUT" openai
step "generate (Ollama API)" wait_until "$TIMEOUT" ollama
step "Stop" stop
total="$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$STARTED" "$(date +%s.%N)")"
echo "all $STEPS steps passed in ${total}s"
