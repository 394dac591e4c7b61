//! The service facade (placeholder).
