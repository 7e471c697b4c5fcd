fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(status) = mcqd::offline::run_subcommand(&args) {
        std::process::exit(status);
    }
    let config = mcqd::config::Config::from_args();
    mcqd::memory::return_large_frees();
    if let Err(e) = mcqd::server::run(config) {
        // The logger is installed first thing in `run`.
        log::error!("{e}");
        std::process::exit(mcqd::preflight::exit_status(&e));
    }
}
