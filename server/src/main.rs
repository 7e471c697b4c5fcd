fn main() {
    let config = mcqd::config::Config::from_args();
    if let Err(e) = mcqd::server::run(config) {
        eprintln!("mcqd: {e}");
        std::process::exit(1);
    }
}
