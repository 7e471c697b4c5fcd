//! `mcqd ping`: is a server answering on this address and port?
//!
//! # Why in mcqd itself
//! A container's HEALTHCHECK runs inside the image, and mcqd's image is
//! Debian slim with no memcache client, netcat or curl. A health check is
//! also best judged by what a client sees: a server that accepts but no
//! longer answers is not healthy. So mcqd sends `version` and wants a
//! `VERSION` line back, with the same flags as the server (`-l`, `-p`).

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use clap::Parser;

/// Asks a running mcqd for its version; exits 0 when it answers, 1 when it
/// does not (for health checks).
#[derive(Parser, Debug)]
#[command(name = "mcqd ping")]
struct Args {
    /// The server's address (its -l); 0.0.0.0 and :: mean this host.
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1")]
    listen: IpAddr,
    /// The server's port (its -p).
    #[arg(short = 'p', long, default_value_t = 22201)]
    port: u16,
    /// Seconds to wait for the connection and for the answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

pub fn main(args: Vec<OsString>) -> i32 {
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                crate::offline::EXIT_ERROR
            } else {
                0
            };
        }
    };
    let address = SocketAddr::new(reachable(args.listen), args.port);
    match ask_version(address, Duration::from_secs(args.timeout.max(1))) {
        Ok(version) => {
            println!("{address}: {version}");
            0
        }
        Err(e) => {
            eprintln!("mcqd ping: {address}: {e}");
            1
        }
    }
}

/// The address to connect to for a server listening on `listen`.
fn reachable(listen: IpAddr) -> IpAddr {
    match listen {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// Sends `version` and returns the `VERSION …` line (or the refusal of a
/// server that wants authentication first).
fn ask_version(address: SocketAddr, patience: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, patience)?;
    stream.set_read_timeout(Some(patience))?;
    stream.set_write_timeout(Some(patience))?;
    stream.write_all(b"version\r\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let line = line.trim_end();
    if line.starts_with("VERSION ") {
        Ok(line.to_string())
    } else if line == crate::access::handshake::UNAUTHENTICATED {
        // -Y: it answers, which is all a health check asks.
        Ok(format!("{line} (authentication required: it answers)"))
    } else {
        Err(io::Error::other(format!(
            "answered {line:?} to `version`, not a VERSION line"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_this_host() {
        assert_eq!(
            reachable("0.0.0.0".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            reachable("::".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            reachable("10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }
}
