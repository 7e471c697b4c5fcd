use clap::Parser;

fn main() {
    let config = mcqd::config::Config::parse();
    if let Err(e) = mcqd::server::run(config) {
        eprintln!("mcqd: {e}");
        std::process::exit(1);
    }
}
