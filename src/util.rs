//! Small pieces shared by the layers.

use tokio::sync::Notify;

/// Waits until `done()` holds, re-checking each time `notify` fires. The waiter is registered
/// before the check, so a notification between the check and the wait is not missed.
pub(crate) async fn wait_until(notify: &Notify, done: impl Fn() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}
