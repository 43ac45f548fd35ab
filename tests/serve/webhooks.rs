//! `[[serve.webhooks]]` against a local receiver on 127.0.0.1: Alertmanager v4 payloads, a
//! retry after a failed delivery, `min_level` respected, the delivery counters.

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
            let mut length = 0usize;
            let mut line = String::new();
            let mut request_line = String::new();
            r.read_line(&mut request_line).unwrap();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            r.read_exact(&mut body).unwrap();
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
