//! Tools around posture, kept out of the product: synthetic organisations, load generators
//! and the criterion benchmarks (`benches/`).

pub mod load;
pub mod loadgen;
pub mod sink;
pub mod synthetic;
pub mod writers;
