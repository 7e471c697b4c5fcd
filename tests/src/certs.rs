//! Test certificates made with the openssl CLI: a CA, server and client
//! certificates signed by it, and the odd ones (another CA's, expired,
//! not yet valid, self-signed), for the TLS tests of the server and of the
//! load generator.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{output_within, text, third_party};

/// A number for a certificate's serial, different in every call.
pub fn rand_serial() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() >> 2
}

/// The certificates of one test, in a directory of their own.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    /// A CA and, signed by it, `server1` and `server2` (both for
    /// 127.0.0.1 and localhost) and a client certificate for `alice`; a
    /// second CA and its client certificate for `mallory`. `None` (and the
    /// test skipped, or failed under CI) without the openssl CLI.
    pub fn make(dir: &Path) -> Option<Certs> {
        third_party(
            "openssl",
            &[],
            &["version"],
            "the openssl CLI (Debian: openssl)",
        )?;
        let dir = dir.join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        let certs = Certs { dir };
        certs.ca("ca", "mcq test CA");
        certs.ca("rogue-ca", "someone else's CA");
        let server = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";
        let client = "extendedKeyUsage=clientAuth\n";
        certs.leaf("server1", "/CN=server1", "ca", server);
        certs.leaf("server2", "/CN=server2", "ca", server);
        certs.leaf("alice", "/O=mcq tests/CN=alice", "ca", client);
        certs.leaf("mallory", "/CN=mallory", "rogue-ca", client);
        Some(certs)
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub fn openssl(&self, args: &[&str]) {
        let out = output_within(Command::new("openssl").args(args).current_dir(&self.dir));
        assert!(out.status.success(), "openssl {args:?}:\n{}", text(&out));
    }

    pub fn ca(&self, name: &str, subject: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={subject}"),
        ]);
    }

    /// A new key `<name>.key` and its signing request `<name>.csr`.
    fn request(&self, name: &str, subject: &str) {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ]);
    }

    pub fn leaf(&self, name: &str, subject: &str, ca: &str, extensions: &str) {
        std::fs::write(self.dir.join(format!("{name}.ext")), extensions).unwrap();
        self.request(name, subject);
        let serial = format!("0x{:x}", rand_serial());
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// A client certificate for `name` signed by `ca` but valid only from
    /// `start` to `end` (`YYYYMMDDHHMMSSZ`): `openssl ca`, since `x509
    /// -req` cannot date one in the past.
    pub fn dated_leaf(&self, name: &str, ca: &str, start: &str, end: &str) {
        std::fs::write(
            self.dir.join(format!("{name}.ext")),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        let cnf = format!("{name}-ca.cnf");
        std::fs::write(
            self.dir.join(&cnf),
            format!(
                "[ca]\ndefault_ca = test\n[test]\ndatabase = {name}-index.txt\n\
                 new_certs_dir = .\nserial = {name}-serial\ndefault_md = sha256\n\
                 policy = any\n[any]\ncommonName = supplied\n"
            ),
        )
        .unwrap();
        std::fs::write(self.dir.join(format!("{name}-index.txt")), "").unwrap();
        std::fs::write(
            self.dir.join(format!("{name}-serial")),
            format!("{:016x}\n", rand_serial()),
        )
        .unwrap();
        self.request(name, &format!("/CN={name}"));
        self.openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            &cnf,
            "-cert",
            &format!("{ca}.pem"),
            "-keyfile",
            &format!("{ca}.key"),
            "-in",
            &format!("{name}.csr"),
            "-out",
            &format!("{name}.pem"),
            "-startdate",
            start,
            "-enddate",
            end,
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    /// A self-signed client certificate for `name` (its own CA).
    pub fn self_signed(&self, name: &str) {
        self.ca(name, name);
    }

    /// Copies `name`'s certificate and key to `cert.pem` and `key.pem`,
    /// the files the server is started with (and reloads).
    pub fn serve(&self, name: &str) {
        for (from, to) in [("pem", "cert.pem"), ("key", "key.pem")] {
            std::fs::copy(self.dir.join(format!("{name}.{from}")), self.dir.join(to)).unwrap();
        }
    }

    /// `-Z -o ssl_chain_cert=cert.pem,ssl_key=key.pem` and `extra` options.
    pub fn args(&self, extra: &str) -> Vec<String> {
        let mut o = format!(
            "ssl_chain_cert={},ssl_key={}",
            self.path("cert.pem"),
            self.path("key.pem")
        );
        if !extra.is_empty() {
            o = format!("{o},{extra}");
        }
        vec!["-Z".into(), "-o".into(), o]
    }
}
