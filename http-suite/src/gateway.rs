//! A fake SMS gateway: a webhook receiver on 127.0.0.1 that records what a `refsys-server`
//! started with [`webhook_env`] sends it (`SMS_SENDER=webhook`), checks the signature as
//! `docs/API.md` and `examples/README.md` document it, and answers 200, 500 or slowly, as the
//! test says.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How the fake SMS gateway answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200.
    Ok,
    /// 500.
    Fail,
    /// Sleeps 3 s, then 200 (past any `SMS_WEBHOOK_TIMEOUT=1`).
    Slow,
}

/// One request the gateway got.
#[derive(Clone, Debug)]
pub struct Received {
    /// `X-Refsys-Timestamp`.
    pub timestamp: Option<String>,
    /// `X-Refsys-Signature`.
    pub signature: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// When it arrived (Unix seconds).
    pub arrived: u64,
}

impl Received {
    /// `phone` of the JSON body.
    pub fn phone(&self) -> String {
        self.json()["phone"].as_str().unwrap_or_default().to_owned()
    }

    /// The body as JSON (Null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The digits at the end of the message.
    pub fn code(&self) -> String {
        let message = self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        message
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether `X-Refsys-Signature` is `sha256=hex(HMAC-SHA256(secret, "<ts>.<body>"))` and
    /// the timestamp is within `skew` of its arrival.
    pub fn signed_with(&self, secret: &str, skew: u64) -> bool {
        use hmac::{Hmac, KeyInit, Mac};
        let (Some(ts), Some(sig)) = (&self.timestamp, &self.signature) else {
            return false;
        };
        let Ok(sent) = ts.parse::<u64>() else {
            return false;
        };
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        *sig == format!("sha256={hex}") && sent.abs_diff(self.arrived) <= skew
    }
}

struct ReceiverState {
    mode: AtomicU8,
    received: Mutex<Vec<Received>>,
}

/// A fake SMS gateway on 127.0.0.1 (any path, POST).
pub struct Receiver {
    /// `http://127.0.0.1:<port>/sms`.
    pub url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts it on a free port, answering `mode`. Needs a tokio runtime.
    pub async fn start(mode: Mode) -> Receiver {
        use axum::body::Bytes;
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};

        async fn handle(
            State(state): State<Arc<ReceiverState>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            state.received.lock().unwrap().push(Received {
                timestamp: header("x-refsys-timestamp"),
                signature: header("x-refsys-signature"),
                content_type: header("content-type"),
                body: body.to_vec(),
                arrived: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            });
            match state.mode.load(Ordering::SeqCst) {
                0 => StatusCode::OK,
                1 => StatusCode::INTERNAL_SERVER_ERROR,
                _ => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    StatusCode::OK
                }
            }
        }

        let state = Arc::new(ReceiverState {
            mode: AtomicU8::new(0),
            received: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(axum::routing::post(handle))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let receiver = Receiver {
            url: format!("http://127.0.0.1:{port}/sms"),
            state,
            task,
        };
        receiver.set_mode(mode);
        receiver
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        let value = match mode {
            Mode::Ok => 0,
            Mode::Fail => 1,
            Mode::Slow => 2,
        };
        self.state.mode.store(value, Ordering::SeqCst);
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Everything received for `phone` (E.164).
    pub fn for_phone(&self, phone: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.phone() == phone)
            .collect()
    }

    /// The code in the last message to `phone`.
    pub fn last_code(&self, phone: &str) -> String {
        self.for_phone(phone)
            .last()
            .unwrap_or_else(|| panic!("no SMS to {phone}"))
            .code()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The webhook settings for a server that sends to `receiver` with `secret`.
pub fn webhook_env(receiver: &Receiver, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SMS_SENDER", "webhook".into()),
        ("SMS_WEBHOOK_URL", receiver.url.clone()),
        ("SMS_WEBHOOK_SECRET", secret.into()),
    ]
}
