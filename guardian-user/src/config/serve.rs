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
        Config::parse(&format!("[serve]\n{serve}\n"), "t.toml").map_err(|e| e.to_string())
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
