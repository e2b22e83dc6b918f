//! One long request sequence touching every route and every error code, recorded so that two
//! frameworks' answers can be compared byte for byte.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use crate::{Res, TEST_PHONES, TestServer};

/// One request and what came back, normalised: tokens and invite codes (random on each
/// server) are replaced by placeholders in the raw body text; bodies that are not JSON are
/// reduced to their length and a hash; the `date` header is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What was asked.
    pub step: String,
    /// The status.
    pub status: u16,
    /// Every header but `date`, sorted.
    pub headers: Vec<(String, String)>,
    /// The normalised body.
    pub body: String,
}

struct Recorder<'a> {
    server: &'a TestServer,
    entries: Vec<Entry>,
    /// Random values seen so far, and their placeholders.
    secrets: Vec<(String, String)>,
}

impl Recorder<'_> {
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Res {
        let res = self
            .server
            .client
            .request(method, path, headers, body.map(<[u8]>::to_vec))
            .await;
        let is_json = res
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"));
        let text = if is_json {
            if let Ok(value) = serde_json::from_slice(&res.body) {
                self.learn(&value);
            }
            self.normalise(String::from_utf8_lossy(&res.body).into_owned())
        } else {
            let mut hasher = DefaultHasher::new();
            res.body.hash(&mut hasher);
            format!("<{} bytes, hash {:x}>", res.body.len(), hasher.finish())
        };
        let mut got: Vec<(String, String)> = res
            .headers
            .iter()
            .filter(|(name, _)| *name != "date")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        got.sort();
        let sent = body.map(|b| String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned());
        let step = self.normalise(format!("{method} {path} {headers:?} {sent:?}"));
        self.entries.push(Entry {
            step,
            status: res.status,
            headers: got,
            body: text,
        });
        res
    }

    /// Replaces every random value seen so far by its placeholder, longest first (so that a
    /// code that happens to occur inside a token cannot break the token's replacement).
    fn normalise(&self, mut text: String) -> String {
        let mut secrets: Vec<&(String, String)> = self.secrets.iter().collect();
        secrets.sort_by_key(|(secret, _)| std::cmp::Reverse(secret.len()));
        for (secret, placeholder) in secrets {
            text = text.replace(secret.as_str(), placeholder);
        }
        text
    }

    fn learn(&mut self, value: &Value) {
        let Some(object) = value.as_object() else {
            return;
        };
        for (key, kind) in [
            ("access", "jwt"),
            ("refresh", "jwt"),
            ("own_invite_code", "invite"),
            ("activated_invite_code", "invite"),
        ] {
            if let Some(secret) = object.get(key).and_then(Value::as_str)
                && !self.secrets.iter().any(|(s, _)| s == secret)
            {
                let placeholder = format!("<{kind} {}>", self.secrets.len());
                self.secrets.push((secret.to_owned(), placeholder));
            }
        }
    }

    async fn post(&mut self, path: &str, bearer: Option<&str>, body: &Value) -> Res {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.call("POST", path, &headers, Some(&body)).await
    }

    async fn delete(&mut self, path: &str, bearer: Option<&str>) -> Res {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", &a[..])).collect();
        self.call("DELETE", path, &headers, None).await
    }

    async fn get(&mut self, path: &str, bearer: Option<&str>) -> Res {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", &a[..])).collect();
        self.call("GET", path, &headers, None).await
    }
}

/// Runs the sequence against `server` and returns what it answered. The server must be fresh
/// (default [`Setup`](crate::Setup)).
pub async fn transcript(server: &TestServer) -> Vec<Entry> {
    let mut r = Recorder {
        server,
        entries: Vec::new(),
        secrets: Vec::new(),
    };
    let json_type = [("content-type", "application/json")];
    let (a_phone, a_code) = TEST_PHONES[0];
    let (b_phone, b_code) = TEST_PHONES[1];
    let plain = "+375291000010";

    // Probes, documents, routing errors.
    for path in [
        "/health",
        "/health/",
        "/ready",
        "/api/schema/",
        "/api/schema",
    ] {
        r.get(path, None).await;
    }
    r.call("HEAD", "/health", &[], None).await;
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/"),
        ("GET", "/login/send_code/"),
        ("POST", "/health"),
        ("DELETE", "/api/token/refresh"),
        ("OPTIONS", "/get_profile/"),
    ] {
        r.call(method, path, &[], None).await;
    }

    // send_code.
    let send = "/login/send_code/";
    r.call("POST", send, &json_type, Some(b"not json")).await;
    r.call("POST", send, &json_type, Some(b"")).await;
    r.post(send, None, &json!({})).await;
    r.post(send, None, &json!({ "phone": 375 })).await;
    r.call("POST", send, &[("content-type", "text/plain")], Some(b"{}"))
        .await;
    r.call("POST", send, &json_type, Some(&[b' '; 16 * 1024 + 1]))
        .await;
    r.post(send, None, &json!({ "phone": "12" })).await;
    r.post(send, None, &json!({ "phone": "+44 20 7946 0958" }))
        .await;
    r.post(send, None, &json!({ "phone": a_phone })).await;
    r.post(send, None, &json!({ "phone": a_phone })).await;
    server.sms.fail(true);
    r.post(send, None, &json!({ "phone": plain })).await;
    server.sms.fail(false);
    // Every call above counted against the client's send_code budget: a new minute.
    server.advance(std::time::Duration::from_secs(60));
    r.post(send, None, &json!({ "phone": "+375 (29) 100-00-10" }))
        .await;

    // verify_code.
    let verify = "/login/verify_code/";
    let code = server.last_code(plain);
    r.secrets.push((code.clone(), "<sms code>".into()));
    let wrong = if code == "0000" { "0001" } else { "0000" };
    r.post(verify, None, &json!({ "phone": plain })).await;
    r.post(verify, None, &json!({ "phone": plain, "code": "12a4" }))
        .await;
    r.post(verify, None, &json!({ "phone": "12", "code": "1234" }))
        .await;
    r.post(verify, None, &json!({ "phone": b_phone, "code": b_code }))
        .await;
    for _ in 0..server.service.policy().otp().max_attempts {
        r.post(verify, None, &json!({ "phone": plain, "code": wrong }))
            .await;
    }
    r.post(verify, None, &json!({ "phone": plain, "code": code }))
        .await;
    let a = r
        .post(verify, None, &json!({ "phone": a_phone, "code": a_code }))
        .await
        .json();
    let a_access = a["access"].as_str().unwrap_or_default().to_owned();
    let a_refresh = a["refresh"].as_str().unwrap_or_default().to_owned();
    r.post(verify, None, &json!({ "phone": a_phone, "code": a_code }))
        .await;

    // Profile and the user's own guarded handler.
    r.get("/get_profile/", None).await;
    r.get("/get_profile/", Some("garbage")).await;
    r.get("/get_profile/", Some(&a_refresh)).await;
    let a_invite = r
        .get("/get_profile/", Some(&a_access))
        .await
        .str("own_invite_code");
    r.get("/me", Some(&a_access)).await;
    r.get("/me", None).await;

    // use_invite_code.
    r.post("/login/send_code", None, &json!({ "phone": b_phone }))
        .await;
    let b = r
        .post(
            "/login/verify_code",
            None,
            &json!({ "phone": b_phone, "code": b_code }),
        )
        .await
        .json();
    let b_access = b["access"].as_str().unwrap_or_default().to_owned();
    let b_invite = r
        .get("/get_profile", Some(&b_access))
        .await
        .str("own_invite_code");
    let apply = "/use_invite_code/";
    r.post(apply, None, &json!({ "invite_code": a_invite }))
        .await;
    r.post(apply, Some(&b_access), &json!({})).await;
    r.post(apply, Some(&b_access), &json!({ "invite_code": "ABC" }))
        .await;
    r.post(apply, Some(&a_access), &json!({ "invite_code": a_invite }))
        .await;
    let unknown = if a_invite == "ZZZZZZ" || b_invite == "ZZZZZZ" {
        "YYYYYY"
    } else {
        "ZZZZZZ"
    };
    r.post(apply, Some(&a_access), &json!({ "invite_code": unknown }))
        .await;
    let messy = format!(" {} ", a_invite.to_lowercase());
    r.secrets
        .push((a_invite.to_lowercase(), "<lower-case invite>".into()));
    r.post(apply, Some(&b_access), &json!({ "invite_code": messy }))
        .await;
    r.post(apply, Some(&a_access), &json!({ "invite_code": b_invite }))
        .await;
    r.post(apply, Some(&b_access), &json!({ "invite_code": a_invite }))
        .await;
    r.get("/get_profile/", Some(&a_access)).await;
    r.get("/get_profile/", Some(&b_access)).await;

    // Refresh, reuse detection, logout.
    let refresh = "/api/token/refresh/";
    r.post(refresh, None, &json!({})).await;
    r.post(refresh, None, &json!({ "refresh": "garbage" }))
        .await;
    r.post(refresh, None, &json!({ "refresh": a_access })).await;
    let second = r
        .post(refresh, None, &json!({ "refresh": a_refresh }))
        .await
        .str("refresh");
    // Within the reuse grace: the live token again.
    r.post(refresh, None, &json!({ "refresh": a_refresh }))
        .await;
    let third = r
        .post(refresh, None, &json!({ "refresh": second }))
        .await
        .str("refresh");
    // Two rotations old: theft, the family goes.
    r.post(refresh, None, &json!({ "refresh": a_refresh }))
        .await;
    r.post(refresh, None, &json!({ "refresh": third })).await;
    let b_refresh = b["refresh"].as_str().unwrap_or_default();
    let logout = "/api/token/logout/";
    r.post(logout, None, &json!({ "refresh": b_refresh })).await;
    r.post(logout, None, &json!({ "refresh": "garbage" })).await;
    r.post(logout, None, &json!({})).await;
    r.post(refresh, None, &json!({ "refresh": b_refresh }))
        .await;

    // Sessions: two more logins of b, listed, one ended by id, the rest by scope.
    let sessions = "/api/sessions/";
    let mut logins = Vec::new();
    for agent in ["Transcript/1.0", "Transcript/2.0"] {
        server.advance(std::time::Duration::from_secs(61));
        r.post(send, None, &json!({ "phone": b_phone })).await;
        let body =
            serde_json::to_vec(&json!({ "phone": b_phone, "code": b_code })).unwrap_or_default();
        let headers = [("content-type", "application/json"), ("user-agent", agent)];
        let login = r.call("POST", verify, &headers, Some(&body)).await.json();
        logins.push(login["access"].as_str().unwrap_or_default().to_owned());
    }
    let b_access = &logins[1];
    // Unrecorded: the ids it shows are random, and learnt before the recorded list.
    let listed = server.client.get(sessions, Some(b_access)).await.json();
    let ids: Vec<String> = listed["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|session| session["id"].as_str().map(str::to_owned))
        .collect();
    for (n, id) in ids.iter().enumerate() {
        r.secrets.push((id.clone(), format!("<session {n}>")));
    }
    r.get(sessions, Some(b_access)).await;
    r.get(sessions, None).await;
    let older = ids.last().cloned().unwrap_or_default();
    r.delete(&format!("{sessions}{older}/"), Some(&a_access))
        .await;
    r.delete(&format!("{sessions}{older}/"), Some(b_access))
        .await;
    r.delete(&format!("{sessions}{older}"), Some(b_access))
        .await;
    r.delete(&format!("{sessions}nope/"), Some(b_access)).await;
    r.get(&format!("{sessions}{older}/"), Some(b_access)).await;
    let revoke = "/api/sessions/revoke/";
    r.post(revoke, Some(b_access), &json!({ "scope": "mine" }))
        .await;
    r.post(revoke, Some(b_access), &json!({ "scope": "others" }))
        .await;
    r.post(revoke, Some(b_access), &json!({ "scope": "all" }))
        .await;
    r.get(sessions, Some(b_access)).await;

    // Account: the export, a phone change refused (own number, taken), deletion.
    server.advance(std::time::Duration::from_secs(61));
    r.post(send, None, &json!({ "phone": a_phone })).await;
    let login = r
        .post(verify, None, &json!({ "phone": a_phone, "code": a_code }))
        .await
        .json();
    let a_access = login["access"].as_str().unwrap_or_default().to_owned();
    let listed = server.client.get(sessions, Some(&a_access)).await.json();
    if let Some(id) = listed["sessions"][0]["id"].as_str() {
        r.secrets.push((id.to_owned(), "<a's session>".into()));
    }
    let export = "/api/account/export/";
    r.get(export, Some(&a_access)).await;
    r.get(export, None).await;
    // Invitees: a page, the next, bad limits and cursors.
    let invitees = "/api/invitees/";
    let first = r
        .get(&format!("{invitees}?limit=1"), Some(&a_access))
        .await
        .json();
    if let Some(cursor) = first["next_cursor"].as_str() {
        r.get(
            &format!("{invitees}?limit=1&cursor={cursor}"),
            Some(&a_access),
        )
        .await;
    }
    for query in [
        "",
        "?limit=0",
        "?limit=x",
        "?cursor=nope",
        "?limit=1&limit=1",
    ] {
        r.get(&format!("{invitees}{query}"), Some(&a_access)).await;
    }
    r.get(invitees, None).await;
    let (phone_send, phone_verify) = (
        "/api/account/phone/send_code/",
        "/api/account/phone/verify/",
    );
    let proof = json!({ "phone": a_phone, "current_code": a_code });
    r.post(phone_send, Some(&a_access), &proof).await;
    r.post(phone_send, Some(&a_access), &json!({ "phone": b_phone }))
        .await;
    let proof = json!({ "phone": "12", "current_code": a_code });
    r.post(phone_send, Some(&a_access), &proof).await;
    let proof = json!({ "phone": b_phone, "current_code": a_code });
    r.post(phone_send, Some(&a_access), &proof).await;
    server.advance(std::time::Duration::from_secs(61));
    r.post(send, None, &json!({ "phone": a_phone })).await;
    r.post(phone_send, Some(&a_access), &proof).await;
    r.post(
        phone_verify,
        Some(&a_access),
        &json!({ "phone": b_phone, "code": b_code }),
    )
    .await;
    let delete = "/api/account/delete/";
    r.post(delete, Some(&a_access), &json!({})).await;
    r.post(delete, Some(&a_access), &json!({ "code": a_code }))
        .await;
    server.advance(std::time::Duration::from_secs(61));
    r.post(send, None, &json!({ "phone": a_phone })).await;
    r.post(delete, Some(&a_access), &json!({ "code": a_code }))
        .await;
    r.get(export, Some(&a_access)).await;
    r.get("/get_profile/", Some(&a_access)).await;

    // Client rate limit, then a store that is down.
    for i in 0..12 {
        let phone = format!("+37529100{:04}", 200 + i);
        r.post(send, None, &json!({ "phone": phone })).await;
    }
    server.rate_store.set_down(true);
    r.get("/ready", None).await;
    r.post(verify, None, &json!({ "phone": a_phone, "code": a_code }))
        .await;
    server.rate_store.set_down(false);
    r.get("/ready", None).await;

    r.entries
}
