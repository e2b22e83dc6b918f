//! SMS pumping against the real `refsys-server` binary on its defaults (1,000 SMS per sliding
//! hour, a quarter of it per destination prefix, a proof of work asked once a budget is half
//! used, 10 `send_code` per client address per minute), on both frameworks: the attack of
//! issue 15 (110 client addresses × 11 distinct numbers), then ten times that on two ranges,
//! then real users, then an attacker who solves every challenge. Client addresses are real
//! source addresses on 127.0.0.0/8, no proxy header. Codes go to a fake SMS gateway that
//! counts them. Prints a `METRIC` line per phase (`-- --nocapture`).

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use http_suite::gateway::{Mode, Receiver, webhook_env};
use http_suite::{Client, Res};
use refsys_core::Phone;
use serde_json::json;
use support::Server;

const HOOK_SECRET: &str = "pumping tests webhook secret";
const SEND: &str = "/login/send_code/";
const VERIFY: &str = "/login/verify_code/";
/// The server's defaults, spelled out.
const BUDGET: usize = 1000;
const PREFIX_SHARE: usize = BUDGET / 4;
/// The check is asked once half a budget is used: the 126th SMS of a prefix is asked for.
const SENT_BEFORE_THE_CHECK: usize = PREFIX_SHARE / 2;
/// Lower than the default 16 so that this test's many solves stay quick in a debug build.
const DIFFICULTY: u8 = 12;

/// Client address `n` of block `block`: `127.<block>.<n / 250>.<n % 250 + 1>`.
fn address(block: u8, n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        block,
        u8::try_from(n / 250).unwrap(),
        u8::try_from(n % 250 + 1).unwrap(),
    ))
}

/// Belarusian numbers of operator range `range` (`29`, `33`, `44`), `+375<range>2xxxxxx`.
fn number(range: u32, n: usize) -> String {
    format!("+375{range}{}", 2_000_000 + n)
}

/// Numbers sent to per destination prefix, from the gateway.
fn sent_per_prefix(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sms in receiver.all() {
        let phone = Phone::from_trusted_e164(sms.phone()).expect("an E.164 number");
        *counts.entry(phone.prefix().to_owned()).or_default() += 1;
    }
    counts
}

/// `addresses` clients (at most 64 at a time), each sending `per_address` `send_code`s to
/// the numbers `numbers(address, i)` gives; the statuses and codes counted.
async fn flood(
    base: &str,
    block: u8,
    addresses: usize,
    per_address: usize,
    numbers: impl Fn(usize, usize) -> String + Send + Sync + 'static,
) -> BTreeMap<String, usize> {
    let numbers = Arc::new(numbers);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for a in 0..addresses {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let numbers = numbers.clone();
        let client = Client::bound(base, address(block, a));
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..per_address {
                let res = client.post(SEND, json!({ "phone": numbers(a, i) })).await;
                seen.push(outcome(&res));
            }
            drop(permit);
            seen
        }));
    }
    let mut counts = BTreeMap::new();
    for task in tasks {
        for seen in task.await.unwrap() {
            *counts.entry(seen).or_default() += 1;
        }
    }
    counts
}

/// `200`, or the status and error code, e.g. `428 human_check_required`.
fn outcome(res: &Res) -> String {
    if res.status == 200 {
        return "200".into();
    }
    let code = res.json()["code"].as_str().unwrap_or("?").to_owned();
    format!("{} {code}", res.status)
}

/// `send_code` as a person's client does it: answers the proof of work when asked.
async fn send_solving(client: &Client, phone: &str) -> Res {
    let res = client.post(SEND, json!({ "phone": phone })).await;
    if res.status != 428 {
        return res;
    }
    let challenge = &res.json()["challenge"];
    assert_eq!(challenge["difficulty"], u64::from(DIFFICULTY));
    let answer = http_suite::pow_answer(challenge);
    client
        .post(SEND, json!({ "phone": phone, "human_check": answer }))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_pumping_from_many_addresses_leaves_logins_working_on_axum() {
    sms_pumping(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_pumping_from_many_addresses_leaves_logins_working_on_actix() {
    sms_pumping(&["--framework", "actix"]).await;
}

async fn sms_pumping(args: &[&str]) {
    let receiver = Receiver::start(Mode::Ok).await;
    let mut env = webhook_env(&receiver, HOOK_SECRET);
    env.push(("HUMAN_CHECK_POW_DIFFICULTY", DIFFICULTY.to_string()));
    let server = Server::start(&env, args).await;
    let base = server.base.clone();

    // 1. The measured attack: 110 addresses × 11 distinct numbers of one range, at once.
    // (Within one per-minute window, so that each address's 11th call is the one refused;
    // and within one clock hour, so that no place of the sliding hour frees meanwhile: the
    // whole test takes about a minute.)
    http_suite::away_from_a_window_edge_by(3600, 180).await;
    http_suite::away_from_a_window_edge(60).await;
    let started = Instant::now();
    let seen = flood(&base, 10, 110, 11, |a, i| number(29, a * 11 + i)).await;
    println!(
        "METRIC pumping {args:?} 110x11 on +37529 in {:?}: {seen:?}",
        started.elapsed()
    );
    assert_eq!(seen.get("200"), Some(&SENT_BEFORE_THE_CHECK), "{seen:?}");
    assert_eq!(seen.get("429 rate_limited"), Some(&110), "{seen:?}");
    assert_eq!(
        seen.get("428 human_check_required"),
        Some(&(1210 - 110 - SENT_BEFORE_THE_CHECK)),
        "{seen:?}"
    );
    assert_eq!(receiver.all().len(), SENT_BEFORE_THE_CHECK);

    // 2. Ten times that, from 1,100 other addresses, on two ranges: the attacked range gets
    // no more SMS; the second one gets its own half share, and then a check too.
    let started = Instant::now();
    let seen = flood(&base, 11, 1100, 11, |a, i| {
        let range = if a % 2 == 0 { 29 } else { 33 };
        number(range, 10_000 + a * 11 + i)
    })
    .await;
    println!(
        "METRIC pumping {args:?} 1100x11 on +37529/+37533 in {:?}: {seen:?}",
        started.elapsed()
    );
    assert_eq!(seen.get("200"), Some(&SENT_BEFORE_THE_CHECK), "{seen:?}");
    let refused: usize = seen
        .iter()
        .filter(|(outcome, _)| *outcome != "200")
        .map(|(outcome, n)| {
            assert!(
                outcome == "428 human_check_required" || outcome == "429 rate_limited",
                "{outcome}"
            );
            n
        })
        .sum();
    assert_eq!(refused, 12_100 - SENT_BEFORE_THE_CHECK);
    let per_prefix = sent_per_prefix(&receiver);
    assert_eq!(per_prefix["+37529"], SENT_BEFORE_THE_CHECK);
    assert_eq!(per_prefix["+37533"], SENT_BEFORE_THE_CHECK);

    // 3. Real users. On ranges the attack did not touch, nobody is asked anything; on the
    // attacked ones a person's client answers the proof of work and logs in all the same.
    for (n, phone) in [
        "+375442000001",
        "+447911000001",
        "+79161000001",
        "+375292999999",
        "+375332999999",
    ]
    .into_iter()
    .enumerate()
    {
        let client = Client::bound(&base, address(20, n));
        let res = client.post(SEND, json!({ "phone": phone })).await;
        let attacked = phone.starts_with("+37529") || phone.starts_with("+37533");
        let res = if attacked {
            assert_eq!(outcome(&res), "428 human_check_required", "{phone}");
            send_solving(&client, phone).await
        } else {
            res
        };
        assert_eq!(res.status, 200, "{phone}: {}", res.json());
        let code = receiver.last_code(phone);
        let res = client
            .post(VERIFY, json!({ "phone": phone, "code": code }))
            .await;
        assert_eq!(res.status, 200, "{phone} logs in: {}", res.json());
    }

    // 4. An attacker who solves every challenge, 200 numbers, 5 per address (two calls each,
    // within the per-address limit): the range's share caps it, the rest are 503 for that
    // range only.
    let started = Instant::now();
    let mut outcomes = BTreeMap::<String, usize>::new();
    for a in 0..40 {
        let client = Client::bound(&base, address(12, a));
        for i in 0..5 {
            let res = send_solving(&client, &number(29, 50_000 + a * 5 + i)).await;
            *outcomes.entry(outcome(&res)).or_default() += 1;
        }
    }
    println!(
        "METRIC pumping {args:?} solving attacker in {:?}: {outcomes:?}",
        started.elapsed()
    );
    let per_prefix = sent_per_prefix(&receiver);
    assert_eq!(per_prefix["+37529"], PREFIX_SHARE, "{per_prefix:?}");
    assert_eq!(
        outcomes.get("503 sms_budget_exhausted"),
        Some(&(200 - (PREFIX_SHARE - SENT_BEFORE_THE_CHECK - 1))),
        "{outcomes:?}"
    );
    // Other ranges still get codes without a check.
    let client = Client::bound(&base, address(20, 99));
    let res = client.post(SEND, json!({ "phone": "+375442000002" })).await;
    assert_eq!(res.status, 200, "{}", res.json());

    // Never more than the budget, and no ERROR logged for any of it.
    let total = receiver.all().len();
    assert!(total <= BUDGET, "{total} SMS sent");
    println!(
        "METRIC pumping {args:?} SMS sent in all: {total} of {BUDGET}; per prefix {:?}",
        sent_per_prefix(&receiver)
    );
    let log = server.log();
    assert!(!log.contains(" ERROR "), "{log}");
}
