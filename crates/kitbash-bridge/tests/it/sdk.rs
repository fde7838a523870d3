//! The official Centrifugo SDKs against the bridge (see the scripts in `tests/sdk/`).
