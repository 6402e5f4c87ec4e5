//! Live analysis (placeholder, filled below).
