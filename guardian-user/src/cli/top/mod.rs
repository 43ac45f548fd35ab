//! `guardian top`: a live view of a running daemon, as a client of its HTTP API (`/status`
//! every second, `/events` as a stream, `/plan` on `p`). Owns the terminal while it runs and
//! gives it back on exit and on panic (ratatui's init/restore).

mod client;
mod model;
mod view;

use anyhow::Context;
use client::{Client, Msg, Readers};
use model::Model;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The daemon's default address (`[serve] listen`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:9867";

pub fn top(url: &str, token_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let token = match token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let readers = Readers::start(Client::new(url, token)).context("cannot start reader threads")?;
    let mut terminal = ratatui::init();
    let result = run(&mut terminal, &readers);
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

/// The token: the file's first line, trimmed; at most 4 KiB.
fn read_token(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .with_context(|| {
            format!(
                "cannot read the token file {}",
                guardian::textpath::shown(path)
            )
        })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        guardian::textpath::shown(path)
    );
    Ok(token)
}

fn run(terminal: &mut ratatui::DefaultTerminal, readers: &Readers) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut model = Model::default();
    loop {
        while let Ok(msg) = readers.rx.try_recv() {
            match msg {
                Msg::Status(status) => match *status {
                    Ok(status) => model.apply_status(status, started.elapsed().as_secs_f64()),
                    Err(e) => model.problem = Some(e),
                },
                Msg::Event(e) => model.apply_event(&e),
                Msg::Stream(Ok(())) => {}
                Msg::Stream(Err(e)) => model.apply_event(&serde_json::json!({
                    "type": "stream", "reason": e
                })),
                Msg::Plan(Ok(plan)) => model.plan = Some(plan),
                Msg::Plan(Err(e)) => {
                    model.plan = Some(serde_json::json!([]));
                    model.apply_event(&serde_json::json!({"type": "plan", "reason": e}));
                }
            }
        }
        terminal.draw(|f| view::draw(f, &model))?;
        if !event::poll(Duration::from_millis(200))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
            KeyCode::Char('s') => model.sort = model.sort.next(),
            KeyCode::Char('p') => {
                model.show_plan = !model.show_plan;
                if model.show_plan {
                    model.plan = None;
                    readers.request_plan();
                }
            }
            _ => {}
        }
    }
}
