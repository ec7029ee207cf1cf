#!/usr/bin/env bash
# The embedded-default demo: initialise var/ and run one message through the pipeline, out and in.
set -euo pipefail
bin=${1:-.venv/bin}
cd "$(dirname "$0")/.."
sealrelay=("$bin/sealrelay" -c config.toml)

"${sealrelay[@]}" init
echo
echo "== outbound: alice@example.org -> bob@example.net (examples/demo/hello.eml)"
status=0
"${sealrelay[@]}" process outbound --from alice@example.org --to bob@example.net \
    -i examples/demo/hello.eml -o var/demo/outbound || status=$?
echo
echo "== inbound: the same message arriving for alice@example.org"
"${sealrelay[@]}" process inbound --to alice@example.org \
    -i examples/demo/hello.eml -o var/demo/inbound.eml
echo
echo "Results are under var/demo/; every step is logged in var/audit.jsonl."
exit "$status"
