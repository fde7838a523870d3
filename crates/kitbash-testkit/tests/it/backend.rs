//! The backend switch: `KITBASH_TEST_BACKEND` picks a process (default) or a container.

use kitbash_testkit::{Backend, TestRedis};

use crate::{TestResult, raw_ping};

#[test]
fn the_selected_backend_gives_a_reachable_url() -> TestResult {
    match Backend::from_env()? {
        Backend::Process => {
            let mut redis = TestRedis::start()?;
            assert_eq!(redis.backend(), Backend::Process);
            let port = redis.server().expect("process backend").port();
            assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
            assert_eq!(raw_ping(port)?, "+PONG\r\n");
            // Fault injection is reachable through the process handle.
            let server = redis.server_mut().expect("process backend");
            server.kill()?;
            server.restart()?;
            assert_eq!(raw_ping(port)?, "+PONG\r\n");
        }
        Backend::Containers => {
            // Containers are async-only; the sync constructor says so instead of hanging.
            let err = TestRedis::start().expect_err("containers need start_async");
            assert!(err.to_string().contains("start_async"), "{err}");
        }
    }
    Ok(())
}
