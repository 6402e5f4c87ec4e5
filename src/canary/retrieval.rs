//! Retrieval (placeholder).
