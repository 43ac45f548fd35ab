//! `[[serve.webhooks]]` against a local receiver on 127.0.0.1: Alertmanager v4 payloads, a
//! retry after a failed delivery, `min_level` respected, the delivery counters; https:// with
//! the receiver's certificate verified against a webhook's `ca_file`.

use super::*;

/// A webhook receiver on 127.0.0.1: answers its first request 500 (a retry must follow), then
/// 200; sends on each body it accepted.
fn receiver() -> (u16, mpsc::Receiver<serde_json::Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = true;
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut r = BufReader::new(conn);
            let Some((request_line, body)) = read_request(&mut r) else {
                continue;
            };
            let code = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let mut conn = r.into_inner();
            write!(
                conn,
                "HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            assert!(request_line.starts_with("POST /alerts "), "{request_line}");
            if !first && tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                return;
            }
            first = false;
        }
    });
    (port, rx)
}

#[test]
fn webhooks_post_alertmanager_payloads_and_retry_a_failed_delivery() {
    if !require_root("webhooks_post_alertmanager_payloads_and_retry_a_failed_delivery") {
        return;
    }
    let (hook_port, bodies) = receiver();
    let node = Node::new(&format!(
        "\n[[serve.webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/alerts\"\n\
         events = [\"threshold_crossed\", \"cleanup_finished\", \"action\"]\nmin_level = \"warning\"\n"
    ));
    let _daemon = node.spawn();
    fill_at_once(&node.mount.dir, &node.mount.path("filler.bin"), 82.0);
    // The crossing is a warning (sent, after one retry); its return to ok, the deletions and
    // the cycle that reached its target are info (below min_level, not sent).
    let first = bodies.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(first["version"], "4");
    assert_eq!(first["status"], "firing");
    let alert = &first["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "GuardianThresholdCrossed");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(
        alert["labels"]["mountpoint"],
        node.mount.dir.to_str().unwrap()
    );
    let event: serde_json::Value =
        serde_json::from_str(alert["annotations"]["event"].as_str().unwrap()).unwrap();
    assert_eq!(event["type"], "threshold_crossed");
    assert!(wait_until(Duration::from_secs(10), || free_percent(
        &node.mount.dir
    ) >= 30.0));
    // The filler may cross again after a cycle that ran while it was writing: more warnings.
    let mut sent = 1;
    while let Ok(more) = bodies.recv_timeout(Duration::from_secs(3)) {
        let alert = &more["alerts"][0];
        assert_ne!(alert["labels"]["severity"], "info", "{more:#}");
        assert_ne!(alert["labels"]["alertname"], "GuardianAction", "{more:#}");
        sent += 1;
    }
    let m = node.metrics();
    assert_eq!(
        m["guardian_webhook_deliveries_total{webhook=\"0\",outcome=\"sent\"}"],
        f64::from(sent)
    );
    assert_eq!(sum_of(&m, "guardian_webhook_dropped_total"), 0.0);
}

/// The request line and body of one HTTP/1.1 request, or `None` when the peer went away (a
/// TLS handshake it refused, say).
fn read_request(r: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut request_line = String::new();
    r.read_line(&mut request_line).ok()?;
    let mut length = 0usize;
    let mut line = String::new();
    while r.read_line(&mut line).ok()? > 0 && line != "\r\n" {
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        line.clear();
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((request_line, body))
}

/// An https:// receiver on 127.0.0.1 with a fresh self-signed certificate for `127.0.0.1`;
/// answers 200 and sends on (request line, body). Returns the port and the certificate (PEM).
fn tls_receiver() -> (u16, String, mpsc::Receiver<(String, serde_json::Value)>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    #[allow(deprecated)] // ring: see serve/tls.rs
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
        )
        .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let tls = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut r = BufReader::new(rustls::StreamOwned::new(tls, conn));
            let Some((request_line, body)) = read_request(&mut r) else {
                continue; // a client that did not trust us
            };
            let mut stream = r.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.conn.send_close_notify();
            let _ = stream.flush();
            let Ok(body) = serde_json::from_slice(&body) else {
                continue;
            };
            if tx.send((request_line, body)).is_err() {
                return;
            }
        }
    });
    (port, key.cert.pem(), rx)
}

#[test]
fn https_webhooks_verify_the_receiver_and_a_ca_file_that_cannot_be_used_is_a_status_problem() {
    if !require_root(
        "https_webhooks_verify_the_receiver_and_a_ca_file_that_cannot_be_used_is_a_status_problem",
    ) {
        return;
    }
    let (port, cert, bodies) = tls_receiver();
    let certs = tempfile::tempdir().unwrap();
    let trusted = certs.path().join("receiver.pem");
    std::fs::write(&trusted, &cert).unwrap();
    // Another self-signed certificate: the receiver's is not signed by it.
    let stranger = certs.path().join("stranger.pem");
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(&stranger, other.cert.pem()).unwrap();
    let junk = certs.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let hook = |path: &str, ca: &std::path::Path| {
        format!(
            "\n[[serve.webhooks]]\nurl = \"https://127.0.0.1:{port}/{path}\"\nca_file = \"{}\"\n\
             events = [\"threshold_crossed\"]\n",
            ca.display()
        )
    };
    let node = Node::new(&format!(
        "{}{}{}",
        hook("trusted", &trusted),
        hook("stranger", &stranger),
        hook("junk", &junk)
    ));
    let _daemon = node.spawn();
    let status_names_junk = wait_until(Duration::from_secs(10), || {
        get(node.port, "/status", None).is_some_and(|(_, body)| {
            body.contains("junk.pem holds no certificate") && body.contains("/junk")
        })
    });
    assert!(
        status_names_junk,
        "the unusable ca_file is not a status problem"
    );
    fill_at_once(&node.mount.dir, &node.mount.path("filler.bin"), 82.0);
    let (request_line, body) = bodies.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(request_line.starts_with("POST /trusted "), "{request_line}");
    assert_eq!(
        body["alerts"][0]["labels"]["alertname"],
        "GuardianThresholdCrossed"
    );
    // The webhook trusting another CA never completes a request; the junk one sends nothing.
    while let Ok((request_line, _)) = bodies.recv_timeout(Duration::from_secs(3)) {
        assert!(request_line.starts_with("POST /trusted "), "{request_line}");
    }
    let m = node.metrics();
    assert!(!m.contains_key("guardian_webhook_deliveries_total{webhook=\"1\",outcome=\"sent\"}"));
    assert!(!m.contains_key("guardian_webhook_deliveries_total{webhook=\"2\",outcome=\"sent\"}"));
}

#[test]
fn a_node_already_over_its_threshold_at_start_sends_the_first_crossing() {
    if !require_root("a_node_already_over_its_threshold_at_start_sends_the_first_crossing") {
        return;
    }
    let (hook_port, bodies) = receiver();
    let node = Node::new(&format!(
        "\n[[serve.webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/alerts\"\n\
         events = [\"threshold_crossed\"]\n"
    ));
    // Full before the daemon starts: its very first poll publishes the crossing, before the
    // server's thread may have started.
    fill_at_once(&node.mount.dir, &node.mount.path("filler.bin"), 82.0);
    let _daemon = node.spawn();
    let first = bodies.recv_timeout(Duration::from_secs(20)).unwrap();
    let alert = &first["alerts"][0];
    assert_eq!(
        alert["labels"]["alertname"], "GuardianThresholdCrossed",
        "{first:#}"
    );
}
