//! Panics in long-running work are caught, named and turned into errors that the caller
//! records, so that one bad input or one bug does not silently stop a loop, a job or the
//! posture checks until the next restart.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// The message a panic carried.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Runs `work`; a panic becomes `Err` with its message. The work's state is not trusted
/// afterwards: callers record the failure and start the next unit of work afresh.
pub async fn catch_panic<T>(work: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(work).catch_unwind().await.map_err(|payload| panic_message(&*payload))
}

/// [`catch_panic`] for blocking work.
pub fn catch_panic_blocking<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|payload| panic_message(&*payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(catch_panic(async { 7 }).await, Ok(7));
        let caught = catch_panic(async { panic!("job {} broke", 3) }).await;
        assert_eq!(caught, Err::<(), _>("job 3 broke".to_owned()));
        assert_eq!(catch_panic_blocking(|| -> u8 { panic!("static text") }), Err("static text".to_owned()));
        let boxed = catch_panic_blocking(|| std::panic::panic_any(42_u32));
        assert_eq!(boxed, Err::<(), _>("a panic without a message".to_owned()));
    }
}
