fn main() {
    let config = mcqd::config::Config::from_args();
    if let Err(e) = mcqd::server::run(config) {
        // The logger is installed first thing in `run`.
        log::error!("{e}");
        std::process::exit(1);
    }
}
