//! Drawing `guardian top` with ratatui: per filesystem a gauge of used space with the threshold
//! marks, avail, P50/P90 time to each threshold and a sparkline of free space; the project
//! table; top writing cgroups; the live action log; the next plan (`p`). Reads the model only.

use super::model::{plan_entries, Model};
use guardian::config::human_bytes;
use guardian::daemon::forecast::human_seconds;
use guardian::daemon::state::FsState;
use guardian::textpath::shown;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Gauge, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

/// Rows of the screen each filesystem takes.
const FS_HEIGHT: u16 = 5;

pub fn draw(f: &mut Frame, m: &Model) {
    let fs_count = m.status.as_ref().map_or(0, |s| s.filesystems.len()) as u16;
    let [header, filesystems, middle, log, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(fs_count.max(1) * FS_HEIGHT),
        Constraint::Min(6),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, m);
    draw_filesystems(f, filesystems, m);
    if m.show_plan {
        draw_plan(f, middle, m);
    } else {
        let [projects, cgroups] =
            Layout::horizontal([Constraint::Percentage(70), Constraint::Percentage(30)])
                .areas(middle);
        draw_projects(f, projects, m);
        draw_cgroups(f, cgroups, m);
    }
    draw_log(f, log, m);
    f.render_widget(
        Paragraph::new(format!(
            "q quit · s sort (by {}) · p plan {} · guardian top",
            m.sort.label(),
            if m.show_plan { "off" } else { "on" }
        ))
        .style(Style::default().add_modifier(Modifier::DIM)),
        help,
    );
}

fn draw_header(f: &mut Frame, area: Rect, m: &Model) {
    let line = match (&m.status, &m.problem) {
        (_, Some(problem)) => Line::from(Span::styled(
            format!("daemon unreachable: {problem}"),
            Style::default().fg(Color::Red),
        )),
        (Some(s), None) => {
            let mut spans = vec![Span::raw(format!(
                "guardian pid {} · source {} · updated {}{}",
                s.pid,
                s.source,
                s.updated,
                if s.dry_run { " · DRY RUN" } else { "" }
            ))];
            if let Some(why) = &s.refusing {
                spans.push(Span::styled(
                    format!(" · REFUSING: {why}"),
                    Style::default().fg(Color::Red),
                ));
            }
            if !s.problems.is_empty() {
                spans.push(Span::styled(
                    format!(" · {} problem(s): {}", s.problems.len(), s.problems[0]),
                    Style::default().fg(Color::Yellow),
                ));
            }
            Line::from(spans)
        }
        (None, None) => Line::from("connecting…"),
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_filesystems(f: &mut Frame, area: Rect, m: &Model) {
    let Some(status) = &m.status else {
        return;
    };
    let rows = Layout::vertical(
        status
            .filesystems
            .iter()
            .map(|_| Constraint::Length(FS_HEIGHT)),
    )
    .split(area);
    for (fs, rect) in status.filesystems.iter().zip(rows.iter()) {
        draw_filesystem(f, *rect, fs, m);
    }
}

fn draw_filesystem(f: &mut Frame, area: Rect, fs: &FsState, m: &Model) {
    let block = Block::default().borders(Borders::ALL).title(format!(
        " {} · {:?} · {} ",
        shown(&fs.mount),
        fs.pressure,
        fs.reason
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [gauge, marks, spark] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(inner);
    let total = fs.space.total_bytes.max(1);
    let used = total.saturating_sub(fs.space.avail_bytes);
    let ratio = (used as f64 / total as f64).clamp(0.0, 1.0);
    let color = if fs.space.avail_bytes < fs.limits.critical_bytes {
        Color::Red
    } else if fs.space.avail_bytes < fs.limits.cleanup_bytes {
        Color::Yellow
    } else {
        Color::Green
    };
    f.render_widget(
        Gauge::default()
            .gauge_style(Style::default().fg(color))
            .ratio(ratio)
            .label(format!(
                "{:.1}% used · avail {} of {}",
                ratio * 100.0,
                human_bytes(fs.space.avail_bytes),
                human_bytes(total)
            )),
        gauge,
    );
    f.render_widget(Paragraph::new(threshold_marks(fs, marks.width)), marks);
    let [spark_area, eta_area] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(spark);
    let history: Vec<u64> = m
        .history
        .get(&fs.mount)
        .map(|h| h.iter().copied().collect())
        .unwrap_or_default();
    f.render_widget(
        Sparkline::default()
            .data(&history)
            .max(total)
            .style(Style::default().fg(Color::Cyan)),
        spark_area,
    );
    f.render_widget(Paragraph::new(eta_line(fs)), eta_area);
}

/// A ruler under the gauge: where each threshold falls as used space (`c` cleanup, `!`
/// critical, `t` target).
fn threshold_marks(fs: &FsState, width: u16) -> String {
    let width = usize::from(width);
    let total = fs.space.total_bytes.max(1) as f64;
    let mut ruler = vec![' '; width];
    for (free, mark) in [
        (fs.limits.target_bytes, 't'),
        (fs.limits.cleanup_bytes, 'c'),
        (fs.limits.critical_bytes, '!'),
    ] {
        let used_at = 1.0 - (free as f64 / total).clamp(0.0, 1.0);
        let col = ((used_at * width as f64) as usize).min(width.saturating_sub(1));
        if let Some(c) = ruler.get_mut(col) {
            *c = mark;
        }
    }
    ruler.into_iter().collect()
}

fn eta_line(fs: &FsState) -> String {
    let Some(forecast) = &fs.forecast else {
        return "no forecast yet".into();
    };
    let mut parts = vec![format!(
        "growth {}/s",
        human_bytes(forecast.forecast.rate_bps.max(0.0) as u64)
    )];
    for e in &forecast.forecast.eta {
        let show = |s: Option<f64>| s.map_or("—".to_string(), human_seconds);
        parts.push(format!(
            "{}: P50 {} P90 {}",
            e.name,
            show(e.p50_s),
            show(e.p90_s)
        ));
    }
    parts.join(" · ")
}

fn draw_projects(f: &mut Frame, area: Rect, m: &Model) {
    let rows = m.project_rows();
    let header = Row::new([
        "project",
        "write rate",
        "net rate",
        "written",
        "P90 to threshold",
        "idle",
        "protected",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let body = rows.iter().map(|r| {
        Row::new(vec![
            Cell::from(shown(&r.path).to_string()),
            Cell::from(format!("{}/s", human_bytes(r.rate_bps.max(0.0) as u64))),
            Cell::from(format!("{}/s", signed_rate(r.net_bps))),
            Cell::from(human_bytes(r.written.max(0) as u64)),
            Cell::from(r.eta_p90_s.map_or("—".into(), human_seconds)),
            Cell::from(r.idle_s.map_or("—".into(), human_seconds)),
            Cell::from(r.protected.clone().unwrap_or_default()),
        ])
    });
    let omitted = m.status.as_ref().map_or(0, |s| s.projects_omitted);
    let title = if omitted > 0 {
        format!(
            " projects (sorted by {}; {omitted} more not listed) ",
            m.sort.label()
        )
    } else {
        format!(" projects (sorted by {}) ", m.sort.label())
    };
    f.render_widget(
        Table::new(
            body,
            [
                Constraint::Percentage(30),
                Constraint::Length(11),
                Constraint::Length(11),
                Constraint::Length(10),
                Constraint::Length(17),
                Constraint::Length(8),
                Constraint::Percentage(30),
            ],
        )
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

/// A rate that may be negative: `-3.1 MiB`.
fn signed_rate(bps: f64) -> String {
    let magnitude = human_bytes(bps.abs() as u64);
    if bps <= -1.0 {
        format!("-{magnitude}")
    } else {
        magnitude
    }
}

fn draw_cgroups(f: &mut Frame, area: Rect, m: &Model) {
    let mut cgroups: Vec<(String, f64)> = Vec::new();
    for p in m.status.iter().flat_map(|s| &s.projects) {
        for c in &p.top_cgroups {
            let name = c
                .path
                .as_ref()
                .map(|p| shown(p).to_string())
                .unwrap_or_else(|| format!("cgroup {}", c.cgroup));
            match cgroups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, rate)) => *rate += c.rate_bps,
                None => cgroups.push((name, c.rate_bps)),
            }
        }
    }
    cgroups.sort_by(|a, b| b.1.total_cmp(&a.1));
    let lines: Vec<Line> = cgroups
        .iter()
        .take(usize::from(area.height.saturating_sub(2)))
        .map(|(name, rate)| Line::from(format!("{}/s {name}", human_bytes(rate.max(0.0) as u64))))
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" top writing cgroups "),
        ),
        area,
    );
}

fn draw_log(f: &mut Frame, area: Rect, m: &Model) {
    let height = usize::from(area.height.saturating_sub(2));
    let lines: Vec<Line> = m
        .log
        .iter()
        .rev()
        .take(height)
        .rev()
        .map(|l| {
            let bytes = l.bytes.map_or(String::new(), |(est, freed)| {
                format!(" · est {} · freed {}", human_bytes(est), human_bytes(freed))
            });
            Line::from(format!("{} {}{bytes}", l.ts, l.text))
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" actions ")),
        area,
    );
}

fn draw_plan(f: &mut Frame, area: Rect, m: &Model) {
    let entries = plan_entries(m.plan.as_ref());
    let lines: Vec<Line> = if m.plan.is_none() {
        vec![Line::from("reading the plan…")]
    } else if entries.is_empty() {
        vec![Line::from(
            "nothing to delete now: no filesystem is under pressure (the plan walks only then)",
        )]
    } else {
        entries
            .iter()
            .map(|e| {
                let (mark, style) = if e.deletes {
                    ("delete", Style::default().fg(Color::Yellow))
                } else {
                    ("keep  ", Style::default().fg(Color::Green))
                };
                Line::from(vec![
                    Span::styled(mark, style),
                    Span::raw(format!(
                        " {} {} — {}",
                        e.path,
                        if e.deletes {
                            human_bytes(e.bytes)
                        } else {
                            String::new()
                        },
                        e.why
                    )),
                ])
            })
            .collect()
    };
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" next plan (p to close) "),
        ),
        area,
    );
}
