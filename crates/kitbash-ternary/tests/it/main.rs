//! Integration tests of `kitbash-ternary`: every kernel against the scalar reference and a
//! brute-force model, packing and hat algebra, bank bookkeeping, the signature contract, and
//! the crate's tidiness rules.

#![allow(clippy::unwrap_used)]

mod bank;
mod kernels;
mod signature;
mod support;
mod tidy;
mod vector;
