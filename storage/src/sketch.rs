//! DDSketch settings and encoding shared by the rollups (written at flush) and the SQL sketch
//! functions of the query layer.
//!
//! Sketches use the `sketches-ddsketch` crate with 1 % relative accuracy and up to 2048 bins
//! (nanosecond durations from 1 µs to 10⁹ s need about 1,500), serialized in DataDog's
//! `DDSketchWithExactSummaryStatistics` binary format (the sketches-java encoding), so other
//! DDSketch implementations can read them.

use sketches_ddsketch::{Config, DDSketch};

/// Relative accuracy of every sketch: a quantile is within 1 % of a value at that rank.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// Bins per sketch before the lowest ones collapse.
const MAX_BINS: u32 = 2048;

/// An empty sketch with tracelake's settings.
pub fn new_sketch() -> DDSketch {
    DDSketch::new(Config::new(RELATIVE_ACCURACY, MAX_BINS, 1e-9))
}

/// The sketch's bytes (sketches-java encoding).
pub fn encode(sketch: &DDSketch) -> Vec<u8> {
    sketch.to_java_bytes()
}

/// Reads a sketch's bytes; the error says what is wrong with them.
pub fn decode(bytes: &[u8]) -> Result<DDSketch, String> {
    DDSketch::from_java_bytes(bytes).map_err(|e| e.to_string())
}
