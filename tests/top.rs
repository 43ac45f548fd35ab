//! `guardian top` in a real terminal (tmux): started against the real daemon on a real tmpfs,
//! it shows the filesystem and the projects, the actions of a cleanup as they happen, changes
//! its sort order and shows the next plan on key presses, and gives the terminal back on `q`.

mod support;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;
use support::*;

/// A tmux session running one command; killed on drop.
struct Tmux(String);

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", name])
            .output();
        run(Command::new("tmux").args([
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "200",
            "-y",
            "50",
            command,
        ]));
        Tmux(name.to_string())
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        run(Command::new("tmux").args(["send-keys", "-t", &self.0, keys]));
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until the screen shows `text`; the last screen otherwise.
    fn wait_for(&self, text: &str) -> Result<String, String> {
        let mut last = String::new();
        let seen = wait_until(Duration::from_secs(20), || {
            last = self.screen();
            last.contains(text)
        });
        if seen {
            Ok(last)
        } else {
            Err(last)
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

#[test]
fn top_shows_the_daemon_live_sorts_shows_the_plan_and_quits_in_a_real_terminal() {
    if !require_root("top_shows_the_daemon_live_sorts_shows_the_plan_and_quits_in_a_real_terminal")
    {
        return;
    }
    assert!(
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tmux is needed for the terminal test (.ci/run installs it)"
    );
    let mount = TestMount::tmpfs(256 * MIB);
    let ws = mount.path("ws");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    let port = free_port();
    write_config(
        &config,
        &ws,
        &state,
        "200ms",
        &format!("\n[serve]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    for p in ["alpha", "beta"] {
        write_files(&ws.join(p).join("node_modules/pkg"), 10, 2 * MIB);
        write_file(&ws.join(p).join("src/main.rs"), 4096);
    }
    wait_out_activity();
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "warn"),
    );
    let url = format!("http://127.0.0.1:{port}");
    assert!(
        wait_until(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the daemon never listened on {url}"
    );
    let tmux = Tmux::start(
        "guardian-top-test",
        // The address comes from the config's [serve] listen.
        &format!(
            "{} top --config {}",
            guardian_bin().display(),
            config.display()
        ),
    );
    let mount_text = mount.dir.display().to_string();
    let screen = tmux
        .wait_for(&mount_text)
        .unwrap_or_else(|s| panic!("no filesystem:\n{s}"));
    assert!(screen.contains("source"), "{screen}");
    assert!(screen.contains("avail"), "{screen}");

    // A crossing: the cleanup's actions appear in the live log.
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 82.0);
    let screen = tmux
        .wait_for("node_modules")
        .unwrap_or_else(|s| panic!("no action in the log:\n{s}"));
    assert!(screen.contains("deleted"), "{screen}");
    assert!(screen.contains("freed"), "{screen}");

    tmux.keys("s");
    tmux.wait_for("sorted by P90 time to threshold")
        .unwrap_or_else(|s| panic!("sort key ignored:\n{s}"));
    // The plan comes from the daemon's GET /plan: what would go and why the rest stays, or
    // that nothing is under pressure.
    tmux.keys("p");
    let mut screen = String::new();
    let planned = wait_until(Duration::from_secs(20), || {
        screen = tmux.screen();
        screen.contains("next plan")
            && (screen.contains("nothing to delete now") || screen.contains("keep  "))
    });
    assert!(planned, "no plan from the daemon:\n{screen}");
    tmux.keys("q");
    assert!(
        wait_until(Duration::from_secs(5), || !tmux.alive()),
        "top did not quit on q:\n{}",
        tmux.screen()
    );
}
