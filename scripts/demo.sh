#!/usr/bin/env bash
# Index the Python standard library (shipped with every Python): every module and package, without the test
# suites and site-packages; serve the collection and show one search over HTTP. Re-running skips unchanged
# files. Ctrl-C stops the server.
set -euo pipefail
COLLECTION=${LONGVEC_DEMO_COLLECTION:-collections/stdlib}
HOST=${LONGVEC_HOST:-127.0.0.1}
PORT=${LONGVEC_PORT:-8000}
QUERY=${LONGVEC_DEMO_QUERY:-"parse command line options and arguments"}
STDLIB=$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')

echo "== indexing the standard library at $STDLIB into $COLLECTION"
longvec index --collection "$COLLECTION" "$STDLIB" --include '*.py' \
    --exclude 'site-packages/*' --exclude 'test/*' --exclude '*/test/*' --exclude '*/tests/*' --exclude '*/idle_test/*'

echo "== serving on http://$HOST:$PORT"
longvec serve --collection "$COLLECTION" --host "$HOST" --port "$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' INT TERM EXIT
for _ in $(seq 1 120); do
    if python - "$HOST" "$PORT" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/readyz", timeout=1)  # 503 until loaded
PY
    kill -0 $SERVER 2>/dev/null || { echo "server exited" >&2; exit 1; }
    sleep 0.5
done

echo "== example: POST /search {\"query\": \"$QUERY\", \"k\": 5}"
python - "$HOST" "$PORT" "$QUERY" "$COLLECTION" <<'PY'
import json, sys, urllib.request
host, port, query, collection = sys.argv[1:]
req = urllib.request.Request(
    f"http://{host}:{port}/search",
    data=json.dumps({"query": query, "k": 5}).encode(),
    headers={"Content-Type": "application/json"},
)
hits = json.load(urllib.request.urlopen(req, timeout=60))["hits"]
for rank, hit in enumerate(hits, 1):
    best = hit["chunks"][0]
    symbol = f"  {best['symbol']}" if best.get("symbol") else ""
    print(f"{rank}. {hit['score']:.3f}  {hit['doc_id']}  chars {best['start']}-{best['end']}{symbol}")
print(f"\ntry: curl -s -X POST http://{host}:{port}/search -H 'Content-Type: application/json' "
      f"-d '{{\"query\": \"read a gzip file\", \"k\": 3}}'")
PY
echo "== search page: http://$HOST:$PORT/  (serving until Ctrl-C)"
wait $SERVER
