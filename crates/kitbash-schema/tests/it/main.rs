//! The schema's wire formats: golden bytes, and the envelope's checks.

mod envelope;
mod golden;
