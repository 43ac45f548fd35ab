//! The `[serve]` table: the HTTP endpoints (`/metrics`, `/status`, `/events`) — where they
//! listen and the bearer token a non-loopback address needs. Pure: nothing is bound or read
//! here (the token file is read by `serve::token` when the server starts).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `false` turns the server off.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// TCP address (`host:port`). A non-loopback address needs `token_file`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A Unix socket to serve on as well (an absolute path).
    #[serde(default)]
    pub unix: Option<PathBuf>,
    /// A file holding the bearer token every request must present (`Authorization: Bearer …`);
    /// owned by Guardian's user (or root) and readable by nobody else.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Where to POST events, Alertmanager-v4-shaped (`[[serve.webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// Most `[[serve.webhooks]]`.
pub const MAX_WEBHOOKS: usize = 16;

/// The event types a webhook may ask for.
pub const EVENT_TYPES: [&str; 8] = [
    "disk_pressure",
    "threshold_crossed",
    "forecast_trigger",
    "cleanup_started",
    "action",
    "cleanup_finished",
    "ghost_reaped",
    "source_changed",
];

/// One `[[serve.webhooks]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://host:port/path` or `https://…` (TLS checked against the system's CA store, or
    /// `ca_file` when given).
    pub url: String,
    /// PEM file of the CA certificates that sign an `https://` receiver's certificate, trusted
    /// instead of the system's store (an internal CA).
    #[serde(default, with = "crate::textpath::option")]
    pub ca_file: Option<std::path::PathBuf>,
    /// The event types sent.
    #[serde(default = "default_webhook_events")]
    pub events: Vec<String>,
    /// Events of a lower severity are not sent.
    #[serde(default = "default_min_level")]
    pub min_level: Severity,
}

/// How much an event asks for attention.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

fn default_webhook_events() -> Vec<String> {
    [
        "disk_pressure",
        "threshold_crossed",
        "cleanup_finished",
        "ghost_reaped",
        "source_changed",
    ]
    .map(String::from)
    .to_vec()
}

fn default_min_level() -> Severity {
    Severity::Warning
}

/// Where a webhook POSTs: `url` taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
}

impl Webhook {
    /// `url` taken apart; it must be `http://` or `https://`.
    pub fn target(&self) -> Result<Target, String> {
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = self.url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "`{}`: a webhook URL starts with http:// or https://",
                self.url
            ));
        };
        let default_port = if tls { 443 } else { 80 };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{}`: credentials in the URL are not supported",
                self.url
            ));
        }
        let bad_port = |p: &str| format!("`{}`: `{p}` is not a port", self.url);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{}`: an unclosed `[`", self.url))?;
            let port = match after {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| bad_port(p))?,
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad_port(p))?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("`{}`: no host", self.url));
        }
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("`{}`: the path must be printable ASCII", self.url));
        }
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

fn default_enabled() -> bool {
    true
}

fn default_listen() -> String {
    "127.0.0.1:9867".into()
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            enabled: default_enabled(),
            listen: default_listen(),
            unix: None,
            token_file: None,
            webhooks: Vec::new(),
        }
    }
}

impl ServeConfig {
    /// The parsed `listen` address (checked at load, so this only fails on a config never
    /// validated).
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse::<SocketAddr>().map_err(|e| {
            format!(
                "`{}` is not an address with a port (e.g. 127.0.0.1:9867): {e}",
                self.listen
            )
        })
    }

    /// Checks what the types cannot; returns the key path of the offending value.
    pub(super) fn validate(&self) -> Result<(), (Vec<String>, String)> {
        let key = |k: &str| vec!["serve".to_string(), k.to_string()];
        let addr = self.listen_addr().map_err(|m| (key("listen"), m))?;
        if self.enabled && !addr.ip().is_loopback() && self.token_file.is_none() {
            return Err((
                key("listen"),
                format!(
                    "{addr} is not a loopback address: set serve.token_file (a bearer token \
                     every request must present), or listen on 127.0.0.1"
                ),
            ));
        }
        if self.webhooks.len() > MAX_WEBHOOKS {
            return Err((key("webhooks"), format!("at most {MAX_WEBHOOKS} webhooks")));
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            let at = |k: &str| {
                vec![
                    "serve".to_string(),
                    "webhooks".to_string(),
                    i.to_string(),
                    k.to_string(),
                ]
            };
            let target = hook.target().map_err(|m| (at("url"), m))?;
            if target.tls && !cfg!(target_os = "linux") {
                return Err((
                    at("url"),
                    "https:// webhooks are built on Linux only; use http:// to a local relay"
                        .into(),
                ));
            }
            if let Some(ca) = &hook.ca_file {
                if !target.tls {
                    return Err((at("ca_file"), "is for https:// URLs only".into()));
                }
                if !ca.is_absolute() {
                    return Err((at("ca_file"), "must be an absolute path".into()));
                }
            }
            if hook.events.is_empty() {
                return Err((at("events"), "lists no event type".into()));
            }
            for e in &hook.events {
                if !EVENT_TYPES.contains(&e.as_str()) {
                    return Err((
                        at("events"),
                        format!(
                            "`{e}` is not an event type (one of: {})",
                            EVENT_TYPES.join(", ")
                        ),
                    ));
                }
            }
        }
        for (name, path) in [("unix", &self.unix), ("token_file", &self.token_file)] {
            if let Some(p) = path {
                if !p.is_absolute() {
                    return Err((key(name), "must be an absolute path".into()));
                }
                if p.as_os_str().as_encoded_bytes().contains(&0) {
                    return Err((key(name), "contains a NUL byte".into()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(serve: &str) -> Result<Config, String> {
        let text = if serve.starts_with("[[") {
            format!("{serve}\n")
        } else {
            format!("[serve]\n{serve}\n")
        };
        Config::parse(&text, "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_non_loopback_listen_without_a_token_is_refused_naming_the_key() {
        let e = parse("listen = \"0.0.0.0:9867\"").unwrap_err();
        assert!(e.contains("serve.listen"), "{e}");
        assert!(e.contains("token_file"), "{e}");
        let e = parse("listen = \"[::]:9867\"").unwrap_err();
        assert!(e.contains("serve.listen"), "{e}");
        parse("listen = \"0.0.0.0:9867\"\ntoken_file = \"/etc/guardian/token\"").unwrap();
        parse("listen = \"0.0.0.0:9867\"\nenabled = false").unwrap();
        parse("listen = \"[::1]:9867\"").unwrap();
    }

    #[test]
    fn webhooks_need_an_http_url_and_known_event_types() {
        let hook = |body: &str| parse(&format!("[[serve.webhooks]]\n{body}"));
        let c = hook("url = \"http://127.0.0.1:9093/hook\"").unwrap();
        let w = &c.serve.webhooks[0];
        assert_eq!(w.min_level, super::Severity::Warning);
        let t = |tls: bool, host: &str, port: u16, path: &str| super::Target {
            tls,
            host: host.into(),
            port,
            path: path.into(),
        };
        assert_eq!(w.target().unwrap(), t(false, "127.0.0.1", 9093, "/hook"));
        let target = |url: &str| {
            hook(&format!("url = \"{url}\"")).unwrap().serve.webhooks[0]
                .target()
                .unwrap()
        };
        assert_eq!(target("http://[::1]/"), t(false, "::1", 80, "/"));
        assert_eq!(
            target("https://hooks.example/a?b=c"),
            t(true, "hooks.example", 443, "/a?b=c")
        );
        assert_eq!(target("https://[::1]:8443"), t(true, "::1", 8443, "/"));
        let e = hook("url = \"ftp://x/\"").unwrap_err();
        assert!(e.contains("serve.webhooks.0.url"), "{e}");
        let e = hook("url = \"http://x/\"\nca_file = \"/etc/ca.pem\"").unwrap_err();
        assert!(e.contains("serve.webhooks.0.ca_file"), "{e}");
        let e = hook("url = \"https://x/\"\nca_file = \"ca.pem\"").unwrap_err();
        assert!(e.contains("serve.webhooks.0.ca_file"), "{e}");
        let e = hook("url = \"http://x:99999/\"").unwrap_err();
        assert!(e.contains("serve.webhooks.0.url"), "{e}");
        let e = hook("url = \"http://x/\"\nevents = [\"disk_full\"]").unwrap_err();
        assert!(e.contains("serve.webhooks.0.events"), "{e}");
        let e = hook("url = \"http://x/\"\nmin_level = \"loud\"").unwrap_err();
        assert!(e.contains("min_level"), "{e}");
    }

    #[test]
    fn defaults_and_bad_values() {
        let c = Config::parse("", "t.toml").unwrap();
        assert!(c.serve.enabled);
        assert_eq!(c.serve.listen, "127.0.0.1:9867");
        let e = parse("listen = \"localhost\"").unwrap_err();
        assert!(e.contains("serve.listen"), "{e}");
        let e = parse("unix = \"run/g.sock\"").unwrap_err();
        assert!(e.contains("serve.unix"), "{e}");
        let e = parse("bogus = 1").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }
}
