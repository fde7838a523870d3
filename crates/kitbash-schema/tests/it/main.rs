//! Golden tests: every wire format of the schema, byte for byte.

mod golden;
