//! In-memory stores (placeholder).
