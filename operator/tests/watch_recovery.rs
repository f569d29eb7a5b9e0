//! Watch errors after an API restart must not stall the Controller (found on a real API
//! server, issue #19): kube-runtime's `Controller` pauses every trigger stream with its
//! client-go backoff (growing to 30 s) whenever one yields an error, and an API restart makes
//! every watch fail a few times (refused, 503, 410 Gone). `controller::guarded` drops the
//! errors (each watch retries on its own short backoff) and reports them for `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use operator::controller::guarded;
use operator::metrics::Metrics;

fn cm(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.metadata.namespace = Some("default".into());
    c
}

fn outage_error() -> watcher::Error {
    watcher::Error::NoResourceVersion
}

/// A trigger stream that fails `errors` times (the restart) and then delivers `cm(a)`; the
/// main stream holds `cm(a)` from the start. Returns how long after the start the reconcile
/// triggered by the delivered event ran.
async fn first_triggered_reconcile(errors: usize, guard: bool) -> Duration {
    let (store, mut writer) = reflector::store::<ConfigMap>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(cm("a")));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let metrics = Arc::new(Metrics::new());
    let mut events: Vec<Result<watcher::Event<ConfigMap>, watcher::Error>> =
        (0..errors).map(|_| Err(outage_error())).collect();
    events.push(Ok(watcher::Event::Apply(cm("a"))));
    let raw = stream::iter(events).chain(stream::pending());
    let triggers = if guard {
        guarded("configmaps", metrics.clone(), raw).boxed()
    } else {
        raw.boxed()
    };
    let triggers = triggers.filter_map(|e| async move {
        match e {
            Ok(watcher::Event::Apply(o)) => Some(Ok(o)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    });
    let calls = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let ran = Arc::new(std::sync::Mutex::new(None));
    let main = stream::pending::<Result<ConfigMap, watcher::Error>>();
    let controller = Controller::for_stream(main, store)
        .watches_stream(triggers, |c: ConfigMap| Some(ObjectRef::from_obj(&c)))
        .run(
            {
                let (calls, ran) = (calls.clone(), ran.clone());
                move |_c: Arc<ConfigMap>, _ctx: Arc<()>| {
                    let (calls, ran) = (calls.clone(), ran.clone());
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        ran.lock().unwrap().get_or_insert(start.elapsed());
                        Ok::<_, std::convert::Infallible>(Action::await_change())
                    }
                }
            },
            |_c, _e: &std::convert::Infallible, _ctx| Action::await_change(),
            Arc::new(()),
        )
        .for_each(|_| async {});
    let _ = tokio::time::timeout(Duration::from_secs(4), controller).await;
    let took = *ran.lock().unwrap();
    took.unwrap_or(Duration::MAX)
}

#[tokio::test]
async fn watch_errors_do_not_pause_the_controller() {
    let guarded_took = first_triggered_reconcile(4, true).await;
    assert!(
        guarded_took < Duration::from_millis(500),
        "with guarded the reconcile ran {guarded_took:?} after the start"
    );
}

/// The failure itself, so that this test shows what `guarded` protects against: the same
/// errors fed straight to the Controller delay the reconcile by its trigger backoff
/// (0.8 + 1.6 + 3.2 s … with jitter), past the 4 s window here.
#[tokio::test]
async fn unguarded_watch_errors_pause_the_controller() {
    let took = first_triggered_reconcile(4, false).await;
    assert!(
        took > Duration::from_secs(2),
        "expected kube-runtime's trigger backoff to delay the reconcile, it ran after {took:?}"
    );
}

#[tokio::test]
async fn failing_watches_make_the_operator_not_ready_until_they_deliver() {
    let metrics = Arc::new(Metrics::new());
    metrics.set_ready(true);
    assert!(metrics.is_ready());
    let events: Vec<Result<watcher::Event<ConfigMap>, watcher::Error>> = vec![
        Err(outage_error()),
        Err(outage_error()),
        // A re-list's own marker says nothing about the server yet.
        Ok(watcher::Event::Init),
    ];
    let mut s = std::pin::pin!(guarded("configmaps", metrics.clone(), stream::iter(events)));
    let first = s.next().await;
    assert!(
        matches!(first, Some(Ok(watcher::Event::Init))),
        "errors dropped"
    );
    assert!(!metrics.is_ready(), "a failing watch is not ready");
    assert_eq!(metrics.failing_watches(), vec!["configmaps"]);
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("kube_vrrp_operator_watch_up{resource=\"configmaps\"} 0"),
        "{text}"
    );

    let later: Vec<Result<watcher::Event<ConfigMap>, watcher::Error>> = vec![
        Ok(watcher::Event::InitApply(cm("a"))),
        Ok(watcher::Event::InitDone),
    ];
    let got: Vec<_> = guarded("configmaps", metrics.clone(), stream::iter(later))
        .collect()
        .await;
    assert_eq!(got.len(), 2);
    assert!(metrics.is_ready(), "ready again once the watch delivers");
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("kube_vrrp_operator_watch_up{resource=\"configmaps\"} 1")
    );
    metrics.clear_watches();
    assert!(metrics.failing_watches().is_empty());
}
