# checkpoint: a Python training loop that, every 3–5 s of "training", saves a 50 MB checkpoint
# the way frameworks do (written to a temporary name in 4 MiB chunks at ~150 MB/s, fsynced,
# renamed) and then deletes the oldest beyond the last 3, with a metrics log appended; for
# 4 minutes, then the run directory is removed. Run by `cargo xtask forecast-record --tool
# checkpoint` with DIR set to the fresh tmpfs.
cd "$DIR"
mkdir run
python3 - "$DIR/run" 240 <<'PY'
import os, random, sys, time
run, seconds = sys.argv[1], float(sys.argv[2])
rng = random.Random(4)
keep, size, chunk = 3, 50 * 1000 * 1000, 4 << 20
block = os.urandom(chunk)
start = time.monotonic()
step = 0
kept = []
with open(os.path.join(run, "metrics.jsonl"), "a") as metrics:
    while time.monotonic() - start < seconds:
        time.sleep(rng.uniform(3.0, 5.0))  # training
        step += 1
        name = os.path.join(run, "ckpt-%06d.pt" % step)
        with open(name + ".tmp", "wb") as f:
            left = size
            while left > 0:
                n = min(chunk, left)
                f.write(block[:n])
                left -= n
                time.sleep(n / 150e6)
            f.flush()
            os.fsync(f.fileno())
        os.rename(name + ".tmp", name)
        kept.append(name)
        while len(kept) > keep:
            os.remove(kept.pop(0))
        metrics.write('{"step": %d, "loss": %.4f}\n' % (step, 1.0 / step))
        metrics.flush()
PY
sleep 5
echo "checkpoint: wipe" >&2
rm -rf "$DIR/run"
sleep 5
