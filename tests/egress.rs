//! Outgoing requests of webhook stages and `http_ok`: no redirect to another host, no
//! header forwarded across one, no link-local or metadata address.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bowline::pipeline::egress::{self, EgressError};

/// Starts a server on a free local port; returns its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed_and_headers_stay_home() {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let recorder = seen.clone();
    let other = serve(axum::Router::new().route(
        "/steal",
        get(move |headers: HeaderMap| {
            let recorder = recorder.clone();
            async move {
                recorder.lock().expect("lock").push(headers);
                "stolen"
            }
        }),
    ))
    .await;
    let target = format!("{other}/steal");
    let here = serve(
        axum::Router::new()
            .route(
                "/hook",
                get(move || {
                    let target = target.clone();
                    async move { (StatusCode::FOUND, [(header::LOCATION, target)]).into_response() }
                }),
            )
            .route(
                "/moved",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok")]).into_response() }),
            )
            .route("/ok", get(|| async { "fine" })),
    )
    .await;
    let client = egress::client(false, Duration::from_secs(5));
    let answer = client
        .get(format!("{here}/hook"))
        .header("X-Api-Key", "grafana-key-never-forwarded")
        .header(header::AUTHORIZATION, "Bearer never-forwarded")
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), StatusCode::FOUND);
    assert!(
        seen.lock().expect("lock").is_empty(),
        "the other host received nothing"
    );

    // On the same host, redirects are followed.
    let answer = client
        .get(format!("{here}/moved"))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.expect("body"), "fine");
}

#[tokio::test]
async fn metadata_addresses_are_refused_unless_allowed() {
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fe80::1]:8080/",
    ] {
        assert!(
            matches!(
                egress::check_url(url, false),
                Err(EgressError::LinkLocal(_))
            ),
            "{url}"
        );
        assert!(egress::check_url(url, true).is_ok(), "{url}");
    }
    // A name that resolves only to a link-local address is refused at resolution, before
    // any connection.
    let client = egress::client(false, Duration::from_secs(5));
    let refused = client
        .get("http://169.254.169.254.nip.invalid/")
        .send()
        .await;
    assert!(refused.is_err());
}
