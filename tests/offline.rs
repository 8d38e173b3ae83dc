//! Scans made offline: a bus's device records each scan with its time and request id, and
//! sends them when it has a network again. The real server, over gRPC and through the
//! `passnum sync-scans` command line.

mod common;
use common::*;
use passnum::rpc::pb;
use tonic::Code;

/// The bus (site 2: stop 0 in Bordeaux, stop 1 in Périgueux, outside the Gironde's
/// perimeter), its token, and ten activated passes of a Gironde order valid all 2026.
async fn bus_and_passes(t: &TestServer) -> (String, Vec<pb::PassInfo>) {
    registry(t).await;
    let (_, passes) = order(t, 1, 10, true).await;
    let token = t.token(pb::Role::Site, 2, &[]).await;
    (token, passes)
}

fn scan(code: &str, stop_n: u32, at: i64) -> pb::RedeemRequest {
    pb::RedeemRequest {
        scanned_at_ms: at,
        ..redeem_req(code, 2, stop(stop_n), "aide")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_sent_late_is_judged_and_dated_at_its_scan_time() {
    let t = TestServer::start().await;
    let (token, p) = bus_and_passes(&t).await;
    let mut bus = t.client(Some(&token)).await.redemptions;
    let now = T0 + 20 * DAY;
    t.set_now(now);

    let first = scan(&p[0].code, 0, T0 + 10 * DAY);
    let r = bus.redeem(first.clone()).await.unwrap().into_inner();
    assert_eq!(r.redeemed_at_ms, T0 + 10 * DAY, "dated by its scan");
    let again = bus.redeem(first).await.unwrap().into_inner();
    assert_eq!(again, r, "a sync sent twice is answered the same way");
    // The record is written now and says when the scan was made.
    let rec = records(&t.op, head(&t.op).await.seq, 1).await.remove(0);
    assert_eq!(rec.at_ms, now);
    assert!(
        rec.body_json.contains(&format!("\"at\":{}", T0 + 10 * DAY)),
        "{}",
        rec.body_json
    );

    let old = scan(&p[1].code, 0, now - 15 * DAY - 1);
    let s = refused(
        bus.redeem(old).await,
        Code::FailedPrecondition,
        "SCAN_TOO_OLD",
    );
    assert!(s.message().contains("window"), "{}", s.message());
    let ahead = scan(&p[1].code, 0, now + 10 * 60_000);
    refused(
        bus.redeem(ahead).await,
        Code::InvalidArgument,
        "SCAN_IN_FUTURE",
    );
    let negative = scan(&p[1].code, 0, -5);
    refused(
        bus.redeem(negative).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    // The perimeter is judged at the stop where the bus was.
    let perigueux = scan(&p[1].code, 1, T0 + 12 * DAY);
    refused(
        bus.redeem(perigueux).await,
        Code::FailedPrecondition,
        "OUTSIDE_PERIMETER",
    );
    // Redeemed at the counter meanwhile: the first to reach the ledger keeps it.
    let counter = t.credential(pb::Role::Site, 1, &[]).await;
    let online = redeem_req(&p[2].code, 1, None, "aide");
    counter.redemptions.clone().redeem(online).await.unwrap();
    let late = scan(&p[2].code, 0, T0 + 11 * DAY);
    refused(
        bus.redeem(late).await,
        Code::FailedPrecondition,
        "ALREADY_REDEEMED",
    );

    let info = passes(&t.op, 1).await;
    assert_eq!(info[0].redemption.as_ref().unwrap().at_ms, T0 + 10 * DAY);
    assert_chain_verifies(&t).await;
    t.stop().await;
}

/// A bus's device back from a tour, on day 20: its export (written by the test), where
/// the answers go, the file holding its token.
struct Device {
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    out: std::path::PathBuf,
    token_file: std::path::PathBuf,
}

/// The bus and its passes, on day 20, after the counter (site 1) redeemed the fourth pass
/// while the bus was away.
async fn back_from_a_tour(t: &TestServer) -> (Device, Vec<pb::PassInfo>) {
    let (token, p) = bus_and_passes(t).await;
    t.set_now(T0 + 20 * DAY);
    let counter = t.credential(pb::Role::Site, 1, &[]).await;
    counter
        .redemptions
        .clone()
        .redeem(redeem_req(&p[3].code, 1, None, "aide"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let device = Device {
        file: dir.path().join("scans.csv"),
        out: dir.path().join("results.csv"),
        token_file: dir.path().join("bus.token"),
        _dir: dir,
    };
    std::fs::write(&device.token_file, &token).unwrap();
    (device, p)
}

impl Device {
    /// Runs `passnum sync-scans` on its export: how many rows were redeemed, of those by an
    /// earlier sync, refused, invalid, unanswered.
    fn sync(&self, t: &TestServer) -> [u64; 5] {
        let args = [
            "sync-scans",
            self.file.to_str().unwrap(),
            "--out",
            self.out.to_str().unwrap(),
            "--json",
            "--server",
            &t.url(),
            "--token-file",
            self.token_file.to_str().unwrap(),
        ];
        let said: serde_json::Value = serde_json::from_str(&cli_ok(&args)).unwrap();
        let keys = [
            "redeemed",
            "redeemed_earlier",
            "refused",
            "invalid",
            "unanswered",
        ];
        keys.map(|k| said[k].as_u64().unwrap_or_else(|| panic!("{k} in {said}")))
    }

    fn results(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_scans_sends_a_devices_file_and_a_second_run_changes_nothing() {
    let t = TestServer::start().await;
    let (device, p) = back_from_a_tour(&t).await;
    // 2026-01-19T09:30:00+01:00 is T0 + 18 days + 8 h 30 min UTC.
    let at = T0 + 18 * DAY + (8 * 60 + 30) * 60_000;
    std::fs::write(
        &device.file,
        format!(
            "request_id,scanned_at,code,site_id,stop,service\n\
             bus-a,2026-01-19T09:30:00+01:00,{},2,0,aide\n\
             bus-b,{},{},2,0,aide\n\
             bus-c,hier,{},2,0,aide\n\
             bus-d,{},{},2,1,aide\n",
            p[0].code,
            T0 + 19 * DAY,
            p[3].code,
            p[1].code,
            T0 + 19 * DAY,
            p[2].code,
        ),
    )
    .unwrap();
    assert_eq!(device.sync(&t), [1, 0, 2, 1, 0]);
    let results = device.results();
    let lines: Vec<&str> = results.lines().collect();
    assert_eq!(
        lines[0],
        "line,request_id,outcome,serial,redeemed_at_ms,reason,message"
    );
    assert_eq!(lines.len(), 5);
    let expected = [
        format!("2,bus-a,redeemed,{},{at},,", p[0].serial),
        "3,bus-b,refused,,,ALREADY_REDEEMED,".into(),
        "4,bus-c,invalid,,,INVALID_ROW,\"scanned_at:".into(),
        "5,bus-d,refused,,,OUTSIDE_PERIMETER,".into(),
    ];
    for (line, start) in lines[1..].iter().zip(&expected) {
        assert!(line.starts_with(start.as_str()), "{line}");
    }

    // The device sends the same file again (it did not hear back): the same answers, and
    // the ledger grows by nothing.
    let before = head(&t.op).await.seq;
    device.sync(&t);
    assert_eq!(device.results(), results);
    assert_eq!(head(&t.op).await.seq, before);

    // Then under a new token (the old one expired, or another tablet of the bus sends the
    // file): its request ids are a new scope, so the server answers ALREADY_REDEEMED for
    // bus-a. Its evidence is this scan's site and time: the row is redeemed, by the earlier
    // sync. bus-b's pass was redeemed at the counter: still refused.
    let new_token = t.token(pb::Role::Site, 2, &[]).await;
    std::fs::write(&device.token_file, &new_token).unwrap();
    assert_eq!(device.sync(&t), [1, 1, 2, 1, 0]);
    let again = device.results();
    let lines: Vec<&str> = again.lines().collect();
    assert_eq!(
        lines[1],
        format!("2,bus-a,redeemed,{},{at},,by an earlier sync", p[0].serial)
    );
    assert!(
        lines[2].starts_with("3,bus-b,refused,,,ALREADY_REDEEMED,"),
        "{}",
        lines[2]
    );
    assert_eq!(
        passes(&t.op, 1).await[0].redemption.as_ref().unwrap().at_ms,
        at,
        "redeemed once, by the first sync"
    );
    let text = t.cli_as(&new_token).text(&[
        "sync-scans",
        device.file.to_str().unwrap(),
        "--out",
        device.out.to_str().unwrap(),
    ]);
    assert!(
        text.starts_with("1 redeemed (1 by an earlier sync), 2 refused"),
        "{text}"
    );
    assert_chain_verifies(&t).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_scans_sends_a_workshop_held_offline_in_the_same_file_one_session_per_request() {
    let t = TestServer::start().await;
    let (device, p) = back_from_a_tour(&t).await;
    // The session's first scan, 2026-01-19T14:05:00+01:00, is when it was held.
    let held = T0 + 18 * DAY + (13 * 60 + 5) * 60_000;
    let session = "2026-01-19,14:00,120,aide,3,CNFS-33-0042";
    let rows = [
        format!("bus-a,{},{},2,0,aide,,,,,,,", T0 + 18 * DAY, p[0].code),
        format!(
            ",2026-01-19T14:07:00+01:00,{},2,0,,ws-1,{session}",
            p[1].code
        ),
        format!(
            ",2026-01-19T14:05:00+01:00,{},2,0,,ws-1,{session}",
            p[2].code
        ),
        format!(
            ",2026-01-19T14:06:00+01:00,{},2,0,,ws-1,{session}",
            p[3].code
        ),
        format!(",{held},{},2,0,,ws-2,{session}", p[4].code),
        format!(",{held},{},2,1,,ws-2,{session}", p[5].code),
    ];
    std::fs::write(
        &device.file,
        format!(
            "request_id,scanned_at,code,site_id,stop,service,session,date,start,\
             duration_minutes,themes,participants,mediator_id\n{}\n",
            rows.join("\n")
        ),
    )
    .unwrap();
    assert_eq!(device.sync(&t), [3, 0, 1, 2, 0]);
    let results = device.results();
    let lines: Vec<&str> = results.lines().collect();
    let expected = [
        format!("2,bus-a,redeemed,{},{},,", p[0].serial, T0 + 18 * DAY),
        format!("3,ws-1,redeemed,{},{held},,", p[1].serial),
        format!("4,ws-1,redeemed,{},{held},,", p[2].serial),
        "5,ws-1,refused,,,ALREADY_REDEEMED,".into(),
        "6,ws-2,invalid,,,INVALID_ROW,\"session ws-2: its rows (lines 6, 7) disagree on stop\""
            .into(),
        "7,ws-2,invalid,,,INVALID_ROW,\"session ws-2: its rows (lines 6, 7) disagree on stop\""
            .into(),
    ];
    assert_eq!(lines.len(), expected.len() + 1, "{results}");
    for (line, start) in lines[1..].iter().zip(&expected) {
        assert!(line.starts_with(start.as_str()), "{line} / {start}");
    }
    let info = passes(&t.op, 1).await;
    for pass in &info[1..3] {
        let red = pass.redemption.as_ref().unwrap();
        assert_eq!(
            (
                red.at_ms,
                red.site_id,
                red.recorded_at_ms,
                red.workshop_id > 0
            ),
            (held, 2, T0 + 20 * DAY, true),
            "one workshop, dated by its session, recorded at the sync"
        );
    }
    assert!(info[4].redemption.is_none() && info[5].redemption.is_none());

    // Sent again: the same answers, and the ledger grows by nothing.
    let before = head(&t.op).await.seq;
    device.sync(&t);
    assert_eq!(device.results(), results);
    assert_eq!(head(&t.op).await.seq, before);

    // Under a new token: the session's passes were redeemed by the first sync.
    std::fs::write(&device.token_file, t.token(pb::Role::Site, 2, &[]).await).unwrap();
    assert_eq!(device.sync(&t), [3, 3, 1, 2, 0]);
    let again = device.results();
    assert_eq!(
        again.lines().nth(2).unwrap(),
        format!("3,ws-1,redeemed,{},{held},,by an earlier sync", p[1].serial)
    );
    assert_eq!(
        passes(&t.op, 1).await[1].redemption.as_ref().unwrap().at_ms,
        held,
        "redeemed once"
    );
    assert_chain_verifies(&t).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_window_at_zero_only_scans_sent_as_they_happen_redeem() {
    let t = TestServer::start_tuned(|c| c.engine.rules.offline_window_ms = 0).await;
    let (token, p) = bus_and_passes(&t).await;
    let mut bus = t.client(Some(&token)).await.redemptions;
    let now = T0 + DAY;
    let late = scan(&p[0].code, 0, now - 60_000);
    refused(
        bus.redeem(late).await,
        Code::FailedPrecondition,
        "SCAN_TOO_OLD",
    );
    let clock_ahead = scan(&p[0].code, 0, now + 60_000);
    let r = bus.redeem(clock_ahead).await.unwrap().into_inner();
    assert_eq!(
        r.redeemed_at_ms, now,
        "a device clock a minute ahead is taken as now"
    );
    t.stop().await;

    // The server's flag is bounded.
    serve_refuses("--offline-window-days", "61", "0..=60");
}

/// A bus syncs scans ten days old on January 31 at noon (UTC). Each can still be reversed for
/// 24 h after it reached the ledger, and February's run (cut-off February 1, 00:00 in Paris)
/// leaves them for March's, when that window has closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_synced_late_can_be_reversed_for_a_day_and_waits_for_the_next_run() {
    let t = TestServer::start().await;
    let (token, p) = bus_and_passes(&t).await;
    let mut bus = t.client(Some(&token)).await.redemptions;
    let synced = T0 + 30 * DAY + 12 * 3_600_000;
    t.set_now(synced);
    for (pass, scanned_day) in [(&p[0], 20), (&p[1], 21)] {
        let r = scan(&pass.code, 0, T0 + scanned_day * DAY);
        bus.redeem(r).await.unwrap();
    }
    let info = passes(&t.op, 1).await;
    let r = info[1].redemption.as_ref().unwrap();
    assert_eq!(
        (r.at_ms, r.recorded_at_ms),
        (T0 + 21 * DAY, synced),
        "dated by its scan, recorded at its sync"
    );
    let reverse = |pass: &pb::PassInfo| pb::ReverseRequest {
        request_id: rid(),
        pass: scanned(&pass.code),
        site_id: 2,
    };
    t.set_now(synced + DAY - 1);
    bus.reverse(reverse(&p[0])).await.unwrap();
    t.set_now(synced + DAY);
    let s = refused(
        bus.reverse(reverse(&p[1])).await,
        Code::FailedPrecondition,
        "REVERSAL_WINDOW_CLOSED",
    );
    assert!(
        s.message().contains(&(synced + DAY).to_string()),
        "{}",
        s.message()
    );

    let mut cl = t.op.clearing.clone();
    let run = |cut_off: &str| pb::RunClearingRequest {
        cut_off: cut_off.into(),
    };
    t.set_now(T0 + 33 * DAY);
    let feb = cl
        .run_clearing(run("2026-02-01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (feb.settlements, feb.lines),
        (0, 0),
        "its reversal window was open at the cut-off"
    );
    t.set_now(T0 + 62 * DAY);
    let march = cl
        .run_clearing(run("2026-03-01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (march.settlements, march.lines, march.total_cents),
        (1, 1, 1000),
        "the scan not reversed is paid once, in March"
    );
    assert_chain_verifies(&t).await;
    t.stop().await;
}

/// A bus holds a workshop at its Bordeaux stop on January 20, with no network, and syncs it
/// on January 31: its passes are dated by the session and reversible from the sync, and the
/// same sync sent again changes nothing. Through gRPC and through `passnum workshop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workshop_held_offline_is_judged_and_dated_by_its_session() {
    let t = TestServer::start().await;
    let (token, p) = bus_and_passes(&t).await;
    let mut bus = t.client(Some(&token)).await.redemptions;
    let synced = T0 + 30 * DAY;
    t.set_now(synced);
    // 2026-01-20T14:05:00+01:00.
    let held = T0 + 19 * DAY + (13 * 60 + 5) * 60_000;
    let session = |codes: &[&str], held_at_ms: i64, date: &str| pb::RedeemWorkshopRequest {
        site_id: 2,
        place: stop(0),
        date: date.into(),
        held_at_ms,
        ..workshop_req(codes)
    };

    let sync = session(&[&p[0].code, &p[1].code], held, "2026-01-20");
    let r = bus
        .redeem_workshop(sync.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.redeemed, r.amount_cents), (2, 2000));
    let before = head(&t.op).await.seq;
    let again = bus.redeem_workshop(sync).await.unwrap().into_inner();
    assert_eq!(again, r, "a sync sent again is answered the same way");
    assert_eq!(head(&t.op).await.seq, before, "and records nothing");
    let info = passes(&t.op, 1).await;
    for pass in &info[..2] {
        let red = pass.redemption.as_ref().unwrap();
        assert_eq!(
            (red.at_ms, red.recorded_at_ms),
            (held, synced),
            "dated by the session, recorded at the sync"
        );
    }

    let too_old = session(&[&p[2].code], synced - 15 * DAY - 1, "2026-01-16");
    refused(
        bus.redeem_workshop(too_old).await,
        Code::FailedPrecondition,
        "SCAN_TOO_OLD",
    );
    for (held_at_ms, date) in [(held, "2026-01-22"), (-5, "2026-01-20")] {
        let s = refused(
            bus.redeem_workshop(session(&[&p[2].code], held_at_ms, date))
                .await,
            Code::InvalidArgument,
            "INVALID_FIELDS",
        );
        assert!(s.message().contains("held_at_ms"), "{}", s.message());
    }
    assert_eq!(
        head(&t.op).await.seq,
        before + 1,
        "the ledger remembers the first refusal for its retries; the invalid ones never reach it"
    );

    let cli = t.cli_as(&token);
    let out = cli.ok(&[
        "workshop",
        "--site",
        "2",
        "--stop",
        "0",
        "--date",
        "2026-01-20",
        "--start",
        "14:00",
        "--duration",
        "120",
        "--theme",
        "aide",
        "--participants",
        "1",
        "--mediator",
        "CNFS-1",
        "--code",
        &p[2].code,
        "--held-at",
        "2026-01-20T14:05:00+01:00",
        "--request-id",
        "ws-2",
    ]);
    let said: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(said["redeemed"], 1, "{out}");
    let red = passes(&t.op, 1).await[2].redemption.clone().unwrap();
    assert_eq!(red.at_ms, held);

    t.set_now(synced + DAY - 1);
    bus.reverse(pb::ReverseRequest {
        request_id: rid(),
        pass: scanned(&p[0].code),
        site_id: 2,
    })
    .await
    .unwrap();
    assert_chain_verifies(&t).await;
    t.stop().await;
}
