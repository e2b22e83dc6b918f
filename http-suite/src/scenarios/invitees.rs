//! Scenarios of invitees at scale: the profile's capped list and `GET /api/invitees/`.

use serde_json::{Value, json};

use super::accounts::{access, log_in};
use super::{PROFILE, USE_INVITE, phone};
use crate::{Framework, TestServer, assert_error};

const INVITEES: &str = "/api/invitees/";

/// A server whose profile lists 2 invitees, an owner (a test phone) and `n` invitees who
/// applied its code in turn: (server, owner's login, the invitees' phones in that order).
async fn owner_with_invitees(framework: Framework, n: usize) -> (TestServer, Value, Vec<String>) {
    let setup = crate::Setup {
        profile_invitees_limit: Some(2),
        ..crate::Setup::default()
    };
    let server = TestServer::start_with(framework, setup).await;
    let (phone0, code0) = crate::TEST_PHONES[0];
    let owner = server.client.login(phone0, code0).await;
    let profile = server
        .client
        .get(PROFILE, Some(access(&owner)))
        .await
        .json();
    let code = profile["own_invite_code"].clone();
    let mut phones = Vec::new();
    for i in 0..n {
        let guest_phone = phone(300 + i);
        let guest = log_in(&server, &guest_phone).await;
        let applied = server
            .client
            .post_as(
                USE_INVITE,
                Some(access(&guest)),
                json!({ "invite_code": code }),
            )
            .await;
        assert_eq!(applied.status, 200, "{}", applied.json());
        phones.push(guest_phone);
    }
    (server, owner, phones)
}

/// `GET /api/invitees/` with `query`, as `login`.
async fn page(server: &TestServer, login: &Value, query: &str) -> crate::Res {
    server
        .client
        .get(&format!("{INVITEES}{query}"), Some(access(login)))
        .await
}

/// The phones and `joined_at`s of a page's invitees.
fn listed(body: &Value) -> Vec<(String, String)> {
    body["invitees"]
        .as_array()
        .expect("an invitee array")
        .iter()
        .map(|invitee| {
            let keys: Vec<_> = invitee.as_object().expect("an object").keys().collect();
            assert_eq!(keys, ["joined_at", "phone"], "an invitee's fields");
            (
                invitee["phone"].as_str().unwrap().to_owned(),
                invitee["joined_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The profile lists the oldest `PROFILE_INVITEES_LIMIT` invitees and counts all; the
/// invitee list pages through all of them, oldest first, `limit` at a time, to a last page
/// whose `next_cursor` is `null`; a new invitee comes after the pages read before it.
pub async fn invitees_are_paged(framework: Framework) {
    let (server, owner, phones) = owner_with_invitees(framework, 5).await;
    let profile = server
        .client
        .get(PROFILE, Some(access(&owner)))
        .await
        .json();
    assert_eq!(profile["invited_users"], json!(phones[..2]), "the oldest 2");
    assert_eq!(profile["invited_count"], 5);

    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut sizes = Vec::new();
    loop {
        let res = page(&server, &owner, &query).await;
        assert_eq!(res.status, 200, "{}", res.json());
        let body = res.json();
        let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["invitees", "next_cursor", "total"]);
        assert_eq!(body["total"], 5);
        let invitees = listed(&body);
        sizes.push(invitees.len());
        seen.extend(invitees);
        match &body["next_cursor"] {
            Value::Null => break,
            Value::String(cursor) => query = format!("?limit=2&cursor={cursor}"),
            other => panic!("next_cursor {other}"),
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    let seen_phones: Vec<_> = seen.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(seen_phones, phones);
    for (_, joined_at) in &seen {
        assert!(
            joined_at.len() == 20 && joined_at.ends_with('Z') && joined_at.as_bytes()[10] == b'T',
            "RFC 3339 UTC, whole seconds: {joined_at}"
        );
    }
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "oldest first");

    // The default page (50) holds them all; the path without its slash is the same route.
    let all = server
        .client
        .get("/api/invitees", Some(access(&owner)))
        .await;
    assert_eq!(all.status, 200);
    assert_eq!(listed(&all.json()), seen);
    assert_eq!(all.json()["next_cursor"], Value::Null);

    // A cursor from before a new invitee joined goes on to it, after the ones read.
    let first = page(&server, &owner, "?limit=4").await.json();
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let newcomer = phone(399);
    let guest = log_in(&server, &newcomer).await;
    let code = profile["own_invite_code"].clone();
    let applied = server
        .client
        .post_as(
            USE_INVITE,
            Some(access(&guest)),
            json!({ "invite_code": code }),
        )
        .await;
    assert_eq!(applied.status, 200);
    let rest = page(&server, &owner, &format!("?cursor={cursor}&limit=200"))
        .await
        .json();
    let rest_phones: Vec<_> = listed(&rest).into_iter().map(|(p, _)| p).collect();
    assert_eq!(rest_phones, [phones[4].clone(), newcomer]);
    assert_eq!(rest["total"], 6);
    assert_eq!(rest["next_cursor"], Value::Null);

    // An invitee has none of its own; `limit` is read percent-decoded, unknown keys ignored.
    let own = page(&server, &guest, "?limit=%31&utm_source=x").await;
    assert_eq!(own.status, 200);
    assert_eq!(
        own.json(),
        json!({"invitees": [], "next_cursor": null, "total": 0})
    );
}

/// Bad `limit`s and cursors are 400 `invalid_request`, a missing or bad token 401, another
/// method 405; none of them echoes what was sent.
pub async fn invitee_routes_refuse_bad_requests(framework: Framework) {
    let (server, owner, _) = owner_with_invitees(framework, 1).await;
    for query in [
        "?limit=0",
        "?limit=201",
        "?limit=-1",
        "?limit=1.5",
        "?limit=abc",
        "?limit=",
        "?limit=99999999999999999999999",
        "?limit=+5",
        "?limit=1&limit=2",
    ] {
        let res = page(&server, &owner, query).await;
        let body = assert_error(&res, 400, "invalid_request");
        assert!(
            body["error"].as_str().unwrap().contains("limit"),
            "{query}: {body}"
        );
    }
    for query in [
        "?cursor=",
        "?cursor=nope",
        "?cursor=aW52MgAAAAAAAAAB",
        "?cursor=%FF",
    ] {
        let res = page(&server, &owner, query).await;
        let body = assert_error(&res, 400, "invalid_request");
        assert!(
            body["error"].as_str().unwrap().contains("cursor"),
            "{query}: {body}"
        );
        assert!(!body["error"].as_str().unwrap().contains("nope"), "{body}");
    }
    assert_eq!(page(&server, &owner, "?limit=200").await.status, 200);
    assert_error(
        &server.client.get(INVITEES, None).await,
        401,
        "unauthorized",
    );
    assert_error(
        &server.client.get(INVITEES, Some("not-a-token")).await,
        401,
        "unauthorized",
    );
    let posted = server
        .client
        .post_as(INVITEES, Some(access(&owner)), json!({}))
        .await;
    assert_error(&posted, 405, "method_not_allowed");
    assert_eq!(posted.header("allow"), Some("GET,HEAD"));
}
