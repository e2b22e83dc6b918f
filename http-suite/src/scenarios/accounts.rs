//! Scenarios of the account routes: export, deletion, phone change.

use std::time::Duration;

use serde_json::{Value, json};

use super::{PROFILE, REFRESH, SEND, USE_INVITE, VERIFY, delete, phone};
use crate::{Framework, TestServer, assert_error};

const EXPORT: &str = "/api/account/export/";
const DELETE: &str = "/api/account/delete/";
const PHONE_SEND: &str = "/api/account/phone/send_code/";
const PHONE_VERIFY: &str = "/api/account/phone/verify/";

/// Logs in `phone` (an ordinary phone: its code comes through the SMS sender).
pub(super) async fn log_in(server: &TestServer, phone: &str) -> Value {
    let c = &server.client;
    let sent = c.post(SEND, json!({ "phone": phone })).await;
    assert_eq!(sent.status, 200, "{}", sent.json());
    let code = server.last_code(phone);
    let login = c
        .post(VERIFY, json!({ "phone": phone, "code": code }))
        .await;
    assert_eq!(login.status, 200, "{}", login.json());
    login.json()
}

pub(super) fn access(login: &Value) -> &str {
    login["access"].as_str().expect("an access token")
}

/// A code other than `code`, of its length.
fn other_code(code: &str) -> String {
    code.chars()
        .map(|c| if c == '9' { '0' } else { '9' })
        .collect()
}

/// The export holds the account, its invitees and its sessions; deleting it takes a fresh
/// code for the account's own phone (a stolen access token alone cannot), then erases it:
/// its tokens are refused at once, it leaves its inviter's list, its invitee keeps the code
/// it applied, nobody can apply its code, and its phone signs up as a new user.
pub async fn account_is_exported_and_deleted(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let (alice_phone, bob_phone, carol_phone) = (phone(20), phone(21), phone(22));
    let alice = log_in(&server, &alice_phone).await;
    let bob = log_in(&server, &bob_phone).await;
    let carol = log_in(&server, &carol_phone).await;
    let alice_code = profile_of(c, access(&alice)).await["own_invite_code"].clone();
    let bob_code = profile_of(c, access(&bob)).await["own_invite_code"].clone();
    server.clock.advance(Duration::from_secs(30));
    let applied = c
        .post_as(
            USE_INVITE,
            Some(access(&bob)),
            json!({ "invite_code": alice_code }),
        )
        .await;
    assert_eq!(applied.status, 200);
    let applied = c
        .post_as(
            USE_INVITE,
            Some(access(&carol)),
            json!({ "invite_code": bob_code }),
        )
        .await;
    assert_eq!(applied.status, 200);

    let export = c.get(EXPORT, Some(access(&bob))).await;
    assert_eq!(export.status, 200, "{}", export.json());
    let export = export.json();
    let mut keys: Vec<_> = export.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "activated_at",
            "activated_invite_code",
            "created_at",
            "invited_users",
            "own_invite_code",
            "phone",
            "rewards",
            "sessions",
            "user_id"
        ]
    );
    assert_eq!(export["user_id"], bob["user_id"]);
    assert_eq!(export["phone"], json!(bob_phone));
    assert_eq!(export["created_at"], "2027-01-15T08:00:00Z");
    assert_eq!(export["own_invite_code"], bob_code);
    assert_eq!(export["activated_invite_code"], alice_code);
    assert_eq!(export["activated_at"], "2027-01-15T08:00:30Z");
    assert_eq!(
        export["invited_users"],
        json!([{ "phone": carol_phone, "joined_at": "2027-01-15T08:00:30Z" }])
    );
    assert_eq!(export["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(export["sessions"][0]["current"], true);
    assert_eq!(export["rewards"], json!([]));

    // Re-authentication: no code, a wrong one, another phone's. (Past the logins' resend
    // cooldown first.)
    server.clock.advance(Duration::from_secs(120));
    let res = c.post_as(DELETE, Some(access(&bob)), json!({})).await;
    assert_error(&res, 400, "invalid_request");
    let res = c
        .post_as(DELETE, Some(access(&bob)), json!({ "code": "1234" }))
        .await;
    assert_error(&res, 400, "code_expired");
    assert_eq!(
        c.post(SEND, json!({ "phone": alice_phone })).await.status,
        200
    );
    let alices_code = server.last_code(&alice_phone);
    let res = c
        .post_as(DELETE, Some(access(&bob)), json!({ "code": alices_code }))
        .await;
    assert_error(&res, 400, "code_expired");
    assert_eq!(
        c.post(SEND, json!({ "phone": bob_phone })).await.status,
        200
    );
    let code = server.last_code(&bob_phone);
    let res = c
        .post_as(
            DELETE,
            Some(access(&bob)),
            json!({ "code": other_code(&code) }),
        )
        .await;
    assert_error(&res, 400, "code_invalid");
    let res = c.post_as(DELETE, None, json!({ "code": code })).await;
    assert_error(&res, 401, "unauthorized");
    assert_eq!(
        c.get(PROFILE, Some(access(&bob))).await.status,
        200,
        "nothing deleted yet"
    );

    let res = c
        .post_as(DELETE, Some(access(&bob)), json!({ "code": code }))
        .await;
    assert_eq!(res.status, 204, "{}", String::from_utf8_lossy(&res.body));
    assert!(res.body.is_empty());
    // Gone, at once.
    assert_error(
        &c.get(PROFILE, Some(access(&bob))).await,
        401,
        "unauthorized",
    );
    assert_error(
        &c.get(EXPORT, Some(access(&bob))).await,
        401,
        "unauthorized",
    );
    let res = c.post(REFRESH, json!({ "refresh": bob["refresh"] })).await;
    assert_error(&res, 401, "invalid_token");
    let res = c
        .post_as(DELETE, Some(access(&bob)), json!({ "code": code }))
        .await;
    assert_error(&res, 401, "unauthorized");
    // The graph: alice's list lost bob, carol keeps bob's code, nobody can apply it.
    let alices = c.get(PROFILE, Some(access(&alice))).await.json();
    assert_eq!(alices["invited_users"], json!([]));
    let carols = c.get(PROFILE, Some(access(&carol))).await.json();
    assert_eq!(carols["activated_invite_code"], bob_code);
    let dave = log_in(&server, &phone(23)).await;
    let res = c
        .post_as(
            USE_INVITE,
            Some(access(&dave)),
            json!({ "invite_code": bob_code }),
        )
        .await;
    assert_error(&res, 404, "invite_code_not_found");
    // The phone signs up again, as somebody new.
    server.clock.advance(Duration::from_secs(120));
    let again = log_in(&server, &bob_phone).await;
    assert_ne!(again["user_id"], bob["user_id"]);
    let profile = c.get(PROFILE, Some(access(&again))).await.json();
    assert_ne!(profile["own_invite_code"], bob_code);
    assert_eq!(profile["activated_invite_code"], Value::Null);
}

/// The profile of the caller, its body.
async fn profile_of(c: &crate::Client, access: &str) -> Value {
    let res = c.get(PROFILE, Some(access)).await;
    assert_eq!(res.status, 200);
    res.json()
}

/// `POST /api/account/phone/send_code/` as `login`.
async fn change_send(c: &crate::Client, login: &Value, body: Value) -> crate::Res {
    c.post_as(PHONE_SEND, Some(access(login)), body).await
}

/// `POST /api/account/phone/verify/` as `login`.
async fn change_verify(c: &crate::Client, login: &Value, phone: &str, code: &str) -> crate::Res {
    c.post_as(
        PHONE_VERIFY,
        Some(access(login)),
        json!({ "phone": phone, "code": code }),
    )
    .await
}

/// A fresh login code for `phone` (past its resend cooldown): what proves the account's
/// current phone for a phone change.
async fn current_code(server: &TestServer, phone: &str) -> String {
    server.clock.advance(Duration::from_secs(61));
    let sent = server.client.post(SEND, json!({ "phone": phone })).await;
    assert_eq!(sent.status, 200, "{}", sent.json());
    server.last_code(phone)
}

/// A phone change: a code for the current number proves it again (a stolen access token
/// alone cannot move the account), then a code to the new number, under send_code's limits,
/// that serves this move only (neither a login code for that number nor another account's
/// change code moves it); the right one moves the account (its next login by the new number
/// finds it, the old number signs up anew); a number another account has is `409
/// phone_taken`, told only to whoever proved it; the account's own number is `400
/// same_phone`.
pub async fn phone_is_changed(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let (old, new, bobs) = (phone(30), phone(31), phone(32));
    let alice = log_in(&server, &old).await;
    let bob = log_in(&server, &bobs).await;
    let res = change_send(c, &alice, json!({ "phone": old, "current_code": "0000" })).await;
    assert_error(&res, 400, "same_phone");
    let res = change_send(c, &alice, json!({ "phone": "12", "current_code": "0000" })).await;
    assert_error(&res, 400, "invalid_phone");
    let res = c
        .post_as(
            PHONE_SEND,
            None,
            json!({ "phone": new, "current_code": "0000" }),
        )
        .await;
    assert_error(&res, 401, "unauthorized");
    // Without a proof of the current number: nothing goes out.
    let res = change_send(c, &alice, json!({ "phone": new })).await;
    assert_error(&res, 400, "invalid_request");
    let res = change_send(c, &alice, json!({ "phone": new, "current_code": "12" })).await;
    assert_error(&res, 400, "invalid_request");
    assert!(
        res.str("error").contains("`current_code`"),
        "{}",
        res.json()
    );
    let proof = current_code(&server, &old).await;
    let res = change_send(
        c,
        &alice,
        json!({ "phone": new, "current_code": other_code(&proof) }),
    )
    .await;
    assert_error(&res, 400, "code_invalid");
    // A login code for the new number does not move the account (what a thief holding the
    // access token and a number of their own would try).
    assert_eq!(c.post(SEND, json!({ "phone": new })).await.status, 200);
    let login_code = server.last_code(&new);
    let res = change_verify(c, &alice, &new, &login_code).await;
    assert_error(&res, 400, "code_invalid");
    assert_eq!(
        c.get(PROFILE, Some(access(&alice))).await.json()["phone"],
        json!(old)
    );

    // A number bob has: the code goes out (nothing tells alice it is taken) ...
    let res = change_send(c, &alice, json!({ "phone": bobs, "current_code": proof })).await;
    assert_eq!(res.status, 200, "{}", res.json());
    let res = change_send(c, &alice, json!({ "phone": bobs, "current_code": proof })).await;
    assert_error(&res, 400, "code_expired");
    // ... bob cannot use it to log in, nor alice's code for a move of his own ...
    let code = server.last_code(&bobs);
    let res = c.post(VERIFY, json!({ "phone": bobs, "code": code })).await;
    assert_error(&res, 400, "code_invalid");
    // ... and only the code's owner learns the number is taken.
    let res = change_verify(c, &alice, &bobs, &code).await;
    assert_error(&res, 409, "phone_taken");

    // A send that fails (the SMS sender is down) gives the proof back.
    let proof = current_code(&server, &old).await;
    server.fail_sms(true);
    let res = change_send(c, &alice, json!({ "phone": new, "current_code": proof })).await;
    assert_error(&res, 502, "sms_failed");
    server.fail_sms(false);
    let res = change_send(c, &alice, json!({ "phone": new, "current_code": proof })).await;
    assert_eq!(res.status, 200, "the proof was given back: {}", res.json());
    let code = server.last_code(&new);
    let res = change_verify(c, &bob, &new, &code).await;
    assert_error(&res, 400, "code_invalid");
    let res = change_verify(c, &alice, &new, &code).await;
    assert_eq!((res.status, res.json()), (200, json!({ "phone": new })));
    let res = change_verify(c, &alice, &new, &code).await;
    assert_error(&res, 400, "same_phone");
    let profile = c.get(PROFILE, Some(access(&alice))).await.json();
    assert_eq!(profile["phone"], json!(new));
    // The session goes on; the new number logs in to the same account, the old anew.
    let refreshed = c
        .post(REFRESH, json!({ "refresh": alice["refresh"] }))
        .await;
    assert_eq!(refreshed.status, 200);
    server.clock.advance(Duration::from_secs(120));
    let by_new = log_in(&server, &new).await;
    assert_eq!(by_new["user_id"], alice["user_id"]);
    let by_old = log_in(&server, &old).await;
    assert_ne!(by_old["user_id"], alice["user_id"]);
    assert_ne!(by_old["user_id"], bob["user_id"]);
    let bobs_profile = c.get(PROFILE, Some(access(&bob))).await.json();
    assert_eq!(bobs_profile["phone"], json!(bobs));
}

/// Every account route refuses a missing or bad token, a malformed body, a wrong content type
/// and other methods, and changes nothing.
pub async fn account_routes_refuse_bad_requests(framework: Framework) {
    let server = TestServer::start(framework).await;
    let c = &server.client;
    let login = c
        .login(crate::TEST_PHONES[0].0, crate::TEST_PHONES[0].1)
        .await;
    let access = access(&login);
    let refresh_token = login["refresh"].as_str().unwrap();
    assert_error(&c.get(EXPORT, None).await, 401, "unauthorized");
    assert_error(
        &c.get(EXPORT, Some(refresh_token)).await,
        401,
        "unauthorized",
    );
    for path in [DELETE, PHONE_SEND, PHONE_VERIFY] {
        for bearer in [None, Some("garbage"), Some(refresh_token)] {
            let res = c
                .post_as(path, bearer, json!({ "phone": phone(40), "code": "1111" }))
                .await;
            assert_error(&res, 401, "unauthorized");
        }
        for body in [json!({ "phone": 1, "code": 2 }), json!([]), json!("x")] {
            let res = c.post_as(path, Some(access), body).await;
            assert_error(&res, 400, "invalid_request");
        }
        let auth = format!("Bearer {access}");
        let res = c
            .request(
                "POST",
                path,
                &[("authorization", &auth), ("content-type", "text/plain")],
                Some(b"{}".to_vec()),
            )
            .await;
        assert_error(&res, 415, "unsupported_media_type");
        let res = c.get(path, Some(access)).await;
        assert_error(&res, 405, "method_not_allowed");
        assert_eq!(res.header("allow"), Some("POST"));
    }
    let res = delete(&server, EXPORT, Some(access)).await;
    assert_error(&res, 405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("GET,HEAD"));
    // The trailing slash is optional, as everywhere.
    assert_eq!(
        c.get(EXPORT.trim_end_matches('/'), Some(access))
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(PROFILE, Some(access)).await.status,
        200,
        "nothing deleted"
    );
}

/// With `INVITEE_PHONES=masked` an inviter sees its invitees' phones masked
/// (`+37529*****67`: the country code and two digits, the last two) in the profile, the
/// export and the invitee list; every user still sees its own phone in full.
pub async fn invitee_phones_can_be_masked(framework: Framework) {
    let setup = crate::Setup {
        invitee_phones: refsys_core::InviteePhones::Masked,
        ..crate::Setup::default()
    };
    let server = TestServer::start_with(framework, setup).await;
    let c = &server.client;
    let (tp0, tp1) = (crate::TEST_PHONES[0], crate::TEST_PHONES[1]);
    let alice = c.login(tp0.0, tp0.1).await;
    let bob = c.login(tp1.0, tp1.1).await;
    let code = profile_of(c, access(&alice)).await["own_invite_code"].clone();
    let applied = c
        .post_as(
            USE_INVITE,
            Some(access(&bob)),
            json!({ "invite_code": code }),
        )
        .await;
    assert_eq!(applied.status, 200);
    // +375291000002: "+37529", then the 5 hidden digits, then "02".
    let masked = "+37529*****02";
    assert_eq!(&tp1.0[..6], &masked[..6]);
    let profile = profile_of(c, access(&alice)).await;
    assert_eq!(profile["invited_users"], json!([masked]));
    assert_eq!(profile["phone"], json!(tp0.0), "one's own phone in full");
    let export = c.get(EXPORT, Some(access(&alice))).await.json();
    assert_eq!(export["invited_users"][0]["phone"], json!(masked));
    let listed = c.get("/api/invitees/", Some(access(&alice))).await.json();
    assert_eq!(listed["invitees"][0]["phone"], json!(masked));
    assert_eq!(export["phone"], json!(tp0.0));
    assert_eq!(profile_of(c, access(&bob)).await["phone"], json!(tp1.0));
}
