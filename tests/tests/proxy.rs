//! Several mcqd behind one address with twemproxy (nutcracker), as users run
//! them to spread queues over machines: each queue lands on one backend by
//! its name, so FIFO order per queue holds through the proxy.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mcq_tests::{free_port, test_dir, third_party, Client, Server, PATIENCE};

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fifo_per_queue_through_twemproxy() {
    let a = Server::start("proxy-a", &["-t", "1"]);
    let b = Server::start("proxy-b", &["-t", "2"]);
    let listen = free_port();
    let dir = test_dir("proxy");
    let config = dir.join("nutcracker.yml");
    std::fs::write(
        &config,
        format!(
            "mcq:\n  listen: 127.0.0.1:{listen}\n  hash: fnv1a_64\n  distribution: modula\n  \
             timeout: 5000\n  auto_eject_hosts: false\n  servers:\n   - 127.0.0.1:{}:1 a\n   - 127.0.0.1:{}:1 b\n",
            a.port, b.port
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let Some(mut cmd) = third_party(
        "nutcracker",
        &["-c", &config, "-o", "/dev/stderr"],
        &["--version"],
        "twemproxy (Debian: nutcracker)",
    ) else {
        return;
    };
    let _proxy = Proxy(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(Instant::now() < deadline, "nutcracker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut c = Client::connect(listen);
    let queues: Vec<String> = (0..20).map(|i| format!("proxied-{i}")).collect();
    for n in 0..30 {
        for q in &queues {
            c.set(q, format!("{q}/{n}").as_bytes());
        }
    }
    // Both backends hold some of the queues.
    let held = |s: &Server| s.client().queue_stats().len();
    assert!(
        held(&a) > 0 && held(&b) > 0,
        "queues not spread: {} / {}",
        held(&a),
        held(&b)
    );
    assert_eq!(held(&a) + held(&b), queues.len());
    for n in 0..30 {
        for q in &queues {
            assert_eq!(c.get(q).unwrap(), format!("{q}/{n}").as_bytes());
        }
    }
    for q in &queues {
        assert_eq!(c.get(q), None);
    }
}
