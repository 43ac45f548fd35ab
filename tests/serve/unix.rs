//! `[serve] unix`: the Unix socket serves what TCP serves; a foreign file at its path is left
//! alone and reported.

use super::*;

#[test]
fn the_unix_socket_serves_status_and_a_foreign_file_there_is_left_alone() {
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let socket = dir.path().join("guardian.sock");
    let foreign = dir.path().join("foreign.sock");
    std::fs::write(&foreign, "not a socket").unwrap();
    let config = |path: &std::path::Path, name: &str| {
        let file = dir.path().join(name);
        write_config(
            &file,
            &ws,
            &dir.path().join(format!("state-{name}")),
            "1s",
            &format!(
                "\n[serve]\nlisten = \"127.0.0.1:{}\"\nunix = \"{}\"\n",
                free_port(),
                path.display()
            ),
        );
        file
    };
    let good = config(&socket, "good.toml");
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", good.to_str().unwrap()])
            .env("GUARDIAN_LOG", "info"),
    );
    let ask = || -> Option<String> {
        let mut s = UnixStream::connect(&socket).ok()?;
        write!(
            s,
            "GET /status HTTP/1.1\r\nHost: guardian\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    };
    assert!(
        wait_until(Duration::from_secs(15), || ask().is_some_and(|t| t
            .starts_with("HTTP/1.1 200")
            && t.contains("\"pid\""))),
        "no status on the Unix socket"
    );
    let bad = config(&foreign, "bad.toml");
    let _other = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", bad.to_str().unwrap()])
            .env("GUARDIAN_LOG", "info"),
    );
    let status = || {
        let out = guardian(&["status", "--config", bad.to_str().unwrap(), "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(15), || status()["problems"]
            .to_string()
            .contains("not a socket of Guardian's own")),
        "{}",
        status()
    );
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "not a socket");
}
