#!/bin/sh
# lkload_check.sh BUILD_DIR - lkload's stream judgement against lumkey-mock: streams whose text is
# the mock's, in order, with a finish event and [DONE], are complete; a stream whose text differs
# (one byte changed, one byte missing, one byte more) is bad; a merged-event answer is judged by
# its text, not its event count. Checks the harness, never a figure.
set -eu
build="$1"
mock="$build/tests/mock/lumkey-mock" lkload="$build/tests/bench/lkload"
tmp="$(mktemp -d /tmp/lk-lkload-check-XXXXXX)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$mock" --listen "127.0.0.1:$port" --record 0 > "$tmp/mock.log" 2>&1 &
mpid=$!
trap 'kill $mpid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
printf '%s' '{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"[[mock chunks=12 interval_ms=1]]"}]}' > "$tmp/body.json"
good="Hello from lumkey-mock. This is a canned answer.Hello from"
run() { # expected-text -> "ok bad text_mismatch text_events"
    "$lkload" --target "127.0.0.1:$port" --path /v1/chat/completions --body-file "$tmp/body.json" \
        --header 'Authorization: Bearer sk-check' --mode streams --conns 4 --requests 8 --expect-text "$1" |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["streams_ok"], r["streams_bad"], r["text_mismatch"], r["text_events"], r["ttft"]["n"])'
}
check() { # label expected-text want
    got="$(run "$2")"
    if [ "$got" != "$3" ]; then echo "lkload_check: $1: got '$got', want '$3'" >&2; exit 1; fi
    echo "lkload_check: $1: $got"
}
check "intact text" "$good" "8 0 0 96 8"
check "one byte changed" "Hello from lumkey-mock. This is a canned answer!Hello from" "0 8 8 96 8"
check "one byte missing" "Hello from lumkey-mock. This is a canned answer.Hello fro" "0 8 8 96 8"
check "one byte more" "${good}m" "0 8 8 96 8"
echo "lkload_check: ok"
