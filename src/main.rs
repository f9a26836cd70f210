//! The `beamq` binary (node wiring lands with the actors).
fn main() {
    println!("beamq {}", env!("CARGO_PKG_VERSION"));
}
