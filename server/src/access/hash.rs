//! `mcqd hash-password`: an argon2id PHC string for the authfile, so that
//! the file need not hold the password itself.
//!
//! The password is read from standard input (its first line, without the
//! line end), never from the command line, where `ps` and the shell's
//! history would show it. On a terminal it is asked for without echo.

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Write};

use clap::Parser;

/// Prints an argon2id hash of the password read from standard input, for
/// an authfile line `<user>:<hash>` (-Y).
#[derive(Parser, Debug)]
#[command(
    name = "mcqd hash-password",
    after_help = "Example:\n  printf '%s\\n' \"$PASSWORD\" | mcqd hash-password --user alice >> /etc/mcqd/authfile"
)]
struct Args {
    /// Print the whole authfile line, `<USER>:<hash>`.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
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
    if let Some(user) = &args.user {
        if !super::grants::valid_user(user) {
            eprintln!("mcqd hash-password: --user {user:?}: a user name must not be empty or hold spaces or `:`");
            return crate::offline::EXIT_ERROR;
        }
    }
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mcqd hash-password: {e}");
            return crate::offline::EXIT_ERROR;
        }
    };
    if password.is_empty() {
        eprintln!("mcqd hash-password: an empty password (nothing on standard input)");
        return crate::offline::EXIT_ERROR;
    }
    match super::authfile::hash(&password) {
        Ok(hash) => {
            match &args.user {
                Some(user) => println!("{user}:{hash}"),
                None => println!("{hash}"),
            }
            0
        }
        Err(e) => {
            eprintln!("mcqd hash-password: {e}");
            1
        }
    }
}

/// The first line of standard input, without `\n` or `\r\n`; asked for
/// without echo on a terminal.
fn read_password() -> io::Result<Vec<u8>> {
    let stdin = io::stdin();
    let _quiet = if stdin.is_terminal() {
        eprint!("password: ");
        io::stderr().flush()?;
        NoEcho::start()
    } else {
        None
    };
    let mut line = Vec::new();
    stdin.lock().read_until(b'\n', &mut line)?;
    if _quiet.is_some() {
        eprintln!();
    }
    if line.ends_with(b"\n") {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    }
    Ok(line)
}

/// The terminal's echo turned off until dropped.
struct NoEcho(libc::termios);

impl NoEcho {
    fn start() -> Option<NoEcho> {
        // SAFETY: tcgetattr/tcsetattr on standard input with a termios we own.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut term) != 0 {
                return None;
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            (libc::tcsetattr(0, libc::TCSANOW, &term) == 0).then_some(NoEcho(saved))
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in start.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
    }
}
