//! `controller::store_ready` with two waiters on one store: kube-runtime wakes only the task
//! that polled `wait_until_ready` last, so a waiter that trusted the wake-up hung forever (the
//! operator then never marked its caches synced and never reconciled).

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector;
use kube::runtime::watcher;
use operator::controller::store_ready;

#[tokio::test]
async fn store_ready_survives_a_later_waiter() {
    let (store, mut writer) = reflector::store::<ConfigMap>();
    let first = {
        let store = store.clone();
        tokio::spawn(async move { store_ready(&store).await })
    };
    // Let the first waiter register its waker, then poll from this task: its waker replaces
    // the first one.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = std::pin::pin!(store.wait_until_ready());
    assert!(futures::poll!(second.as_mut()).is_pending());
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let res = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the first waiter saw the store become ready");
    assert!(res.expect("task").is_ok());
    assert!(second.await.is_ok());
}

#[test]
fn watch_backoff_is_capped_at_one_second_and_resets() {
    use kube::runtime::utils::Backoff as _;
    let mut b = operator::controller::WatchBackoff::default();
    let got: Vec<u64> = b.by_ref().take(5).map(|d| d.as_millis() as u64).collect();
    assert_eq!(got, vec![250, 500, 1000, 1000, 1000]);
    b.reset();
    assert_eq!(b.next(), Some(Duration::from_millis(250)));
}
