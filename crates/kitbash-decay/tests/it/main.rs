//! kitbash-decay against a real redis-server: the decayed resonance equals a naive reference
//! over many cycles (in-process, and across a leader `kill -9` with real binaries), crossings
//! fire once per rise, a stale leader is fenced out, poison events are dead-lettered, a
//! `kill -9` mid-batch and a restart count nothing twice, SIGTERM drains, a Redis restart is
//! survived; the same for the compact layout, plus its sweep and the layout check; `queries` is
//! kept near its bound without trimming unacknowledged entries (`bounds`).

mod bounds;
mod cluster;
mod support;

mod compact;
mod cycle;
mod faults;
