# logrotate: an application appending ~2.5 MB/s of access-log lines (Python; varied fields, so
# gzip compresses them about as much as real logs) while logrotate runs every 5 s with
# `size 30M`, `rotate 4`, `compress`, `copytruncate` (copy, truncate, gzip the copy, drop the
# fifth archive), for 4 minutes; then the logs are removed. Run by `cargo xtask forecast-record
# --tool logrotate` with DIR set to the fresh tmpfs.
cd "$DIR"
mkdir logs
cat > logrotate.conf <<CONF
$DIR/logs/app.log {
    size 30M
    rotate 4
    compress
    copytruncate
    missingok
    notifempty
}
CONF
chmod 0644 logrotate.conf
python3 - "$DIR/logs/app.log" 240 <<'PY' &
import random, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
rng = random.Random(17)
paths = ["/api/v1/items", "/api/v1/users", "/static/app.js", "/healthz", "/api/v1/orders"]
agents = ["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "python-requests/2.31", "Go-http-client/1.1"]
start = time.monotonic()
with open(path, "a", buffering=1 << 16) as log:
    tick = 0
    while time.monotonic() - start < seconds:
        tick += 1
        # ~250 KB every 100 ms, with a slow swell of the rate (busy and quiet minutes).
        n = int(2000 * (1.0 + 0.3 * rng.uniform(-1, 1)))
        now = time.time()
        lines = []
        for _ in range(n):
            lines.append(
                "%.3f %d.%d.%d.%d req=%016x %s %s/%d status=%d bytes=%d dur_ms=%.1f ua=\"%s\"\n" % (
                    now, 10, rng.randrange(256), rng.randrange(256), rng.randrange(256),
                    rng.getrandbits(64), rng.choice(["GET", "GET", "GET", "POST"]),
                    rng.choice(paths), rng.randrange(100000),
                    rng.choice([200, 200, 200, 200, 304, 404, 500]), rng.randrange(50000),
                    rng.expovariate(1 / 20.0), rng.choice(agents)))
        log.write("".join(lines))
        log.flush()
        delay = start + tick * 0.1 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
PY
writer=$!
while kill -0 "$writer" 2>/dev/null; do
  sleep 5
  logrotate -s "$DIR/logrotate.state" "$DIR/logrotate.conf"
done
wait "$writer"
sleep 5
echo "logrotate: wipe" >&2
rm -rf "$DIR/logs"
sleep 5
