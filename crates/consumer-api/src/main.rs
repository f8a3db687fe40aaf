//! `consumer-api` entry point (placeholder until its issue lands).

fn main() {
    eprintln!("consumer-api is not implemented yet");
    std::process::exit(2);
}
