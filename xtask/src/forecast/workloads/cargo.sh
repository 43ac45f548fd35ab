# cargo build: a small binary crate with real dependencies (anyhow, serde + derive, serde_json,
# regex) built offline from ~/.cargo/registry with its target dir on the recorded filesystem:
# a full dev build (incremental), three edit-rebuild rounds, a test build and run, another
# edit, `cargo clean`; twice (once when the first round took over 5 minutes). Run by `cargo xtask forecast-record --tool cargo` with DIR set
# to the fresh tmpfs.
cd "$DIR"
export CARGO_TARGET_DIR="$DIR/target" CARGO_INCREMENTAL=1
cargo new --quiet --vcs none demo
cd demo
cat >> Cargo.toml <<'TOML'
anyhow = "1"
serde = { version = "1", features = ["derive"] }
serde_json = "1"
regex = "1"
TOML
cat > src/main.rs <<'RS'
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Record {
    name: String,
    size: u64,
}

fn parse(line: &str) -> anyhow::Result<Record> {
    let re = regex::Regex::new(r"^(\w+)=(\d+)$")?;
    let caps = re.captures(line).ok_or_else(|| anyhow::anyhow!("bad line {line}"))?;
    Ok(Record { name: caps[1].to_string(), size: caps[2].parse()? })
}

fn main() -> anyhow::Result<()> {
    let r = parse("target=42")?;
    println!("{}", serde_json::to_string(&r)?);
    edits();
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses() {
        assert_eq!(super::parse("a=1").unwrap().size, 1);
    }
}

fn edits() {}
RS
build() { nice -n 10 cargo build --offline --quiet -j 2; }
edit() {
  # A new function and a call to it: the crate's own codegen units and incremental state change.
  n=$((n + 1))
  sed -i "s/^fn edits() {/fn edits() {\n    edit_$n();/" src/main.rs
  printf '\nfn edit_%s() {\n    let v: Vec<u64> = (0..%s).collect();\n    println!("{}", serde_json::to_string(&v).unwrap_or_default());\n}\n' "$n" "$n" >> src/main.rs
}
n=0
for round in 1 2; do
  echo "cargo round $round: full build" >&2
  build
  for k in 1 2 3; do sleep 4; edit; build; done
  echo "cargo round $round: tests" >&2
  nice -n 10 cargo test --offline --quiet -j 2 >/dev/null
  sleep 4; edit; build
  sleep 6
  echo "cargo round $round: clean" >&2
  cargo clean --quiet 2>/dev/null || cargo clean
  sleep 8
  [ "$SECONDS" -lt 300 ] || break
done
