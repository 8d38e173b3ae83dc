//! Credentials expire: a token on a lost tablet or in a forgotten script stops working by
//! itself. The real server, over gRPC and through the command line.

mod common;
use common::*;
use passnum::rpc::pb;
use tonic::Code;

fn issue(role: pb::Role, actor_id: u64, valid_days: u32) -> pb::IssueCredentialRequest {
    pb::IssueCredentialRequest {
        request_id: rid(),
        role: role as i32,
        actor_id,
        departements: vec![],
        valid_days,
    }
}

fn metadata(status: &tonic::Status, key: &str) -> String {
    let details = tonic_types::StatusExt::get_error_details(status);
    details.error_info().unwrap().metadata[key].clone()
}

/// The ids of the live credentials that expire before `before`, every page.
async fn to_renew(t: &TestServer, before: i64) -> Vec<String> {
    let req = pb::ListCredentialsRequest {
        expiring_before_ms: before,
        ..Default::default()
    };
    let page = t.op.registry.clone().list_credentials(req).await;
    let page = page.unwrap().into_inner();
    assert!(page.next_after.is_empty());
    page.credentials
        .into_iter()
        .map(|c| c.credential_id)
        .collect()
}

/// A token works until the last millisecond of its lifetime and is refused from then on,
/// for writes and reads, after restarts too; the server's longest lifetime is what it
/// gives when asked for none, and no more. The operator lists which live credentials to
/// renew. The operator's own first credential never expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_from_its_expiry_on() {
    let mut t = TestServer::start().await;
    let now = T0 + DAY;
    registry(&t).await;
    let (_, p) = order(&t, 1, 10, true).await;
    let mut reg = t.op.registry.clone();
    let day = reg.issue_credential(issue(pb::Role::Site, 1, 1)).await;
    let day = day.unwrap().into_inner();
    assert_eq!(day.expires_at_ms, now + DAY);
    let longest = reg.issue_credential(issue(pb::Role::Site, 1, 0)).await;
    let longest = longest.unwrap().into_inner();
    assert_eq!(longest.expires_at_ms, now + 400 * DAY);
    let too_long = refused(
        reg.issue_credential(issue(pb::Role::Site, 1, 401)).await,
        Code::InvalidArgument,
        "CREDENTIAL_LIFETIME_OUT_OF_RANGE",
    );
    assert_eq!(metadata(&too_long, "longest_days"), "400");
    let gone = reg.issue_credential(issue(pb::Role::Structure, 1, 1)).await;
    let gone = gone.unwrap().into_inner();
    reg.revoke_credential(pb::RevokeCredentialRequest {
        request_id: rid(),
        credential_id: gone.credential_id.clone(),
    })
    .await
    .unwrap();

    // Renewals: only live credentials with an end, and only those ending before the date.
    assert_eq!(
        to_renew(&t, now + 10 * DAY).await,
        std::slice::from_ref(&day.credential_id)
    );
    let mut both = vec![day.credential_id.clone(), longest.credential_id.clone()];
    both.sort();
    assert_eq!(to_renew(&t, now + 401 * DAY).await, both);

    let short = t.client(Some(&day.token)).await;
    // A device reads its own credential, to renew it in time.
    let mut registry = short.registry.clone();
    let own = registry
        .get_own_credential(pb::GetOwnCredentialRequest {})
        .await;
    let own = own.unwrap().into_inner();
    assert_eq!(
        (own.credential_id, own.role, own.actor_id, own.expires_at_ms),
        (
            day.credential_id.clone(),
            pb::Role::Site as i32,
            1,
            now + DAY
        )
    );
    t.set_now(now + DAY - 1);
    let mut r = short.redemptions.clone();
    r.redeem(redeem_req(&p[0].code, 1, None, "aide"))
        .await
        .unwrap();
    t.set_now(now + DAY);
    let expired = refused(
        r.redeem(redeem_req(&p[1].code, 1, None, "aide")).await,
        Code::Unauthenticated,
        "TOKEN_EXPIRED",
    );
    assert_eq!(metadata(&expired, "expired_at_ms"), (now + DAY).to_string());
    let read = short.ledger.clone().get_head(pb::GetHeadRequest {}).await;
    refused(read, Code::Unauthenticated, "TOKEN_EXPIRED");
    assert_eq!(
        passes(&t.op, 1).await[1].status,
        pb::PassStatus::Active as i32,
        "nothing was redeemed"
    );
    // The other token of the same site goes on.
    let mut other = t.client(Some(&longest.token)).await.redemptions;
    other
        .redeem(redeem_req(&p[1].code, 1, None, "aide"))
        .await
        .unwrap();

    // Still expired after a restart from the index, and after one replayed from the log.
    t.restart().await;
    let mut ledger = t.client(Some(&day.token)).await.ledger;
    let read = ledger.get_head(pb::GetHeadRequest {}).await;
    refused(read, Code::Unauthenticated, "TOKEN_EXPIRED");
    t.restart_after(|dir| std::fs::remove_dir_all(dir.join("index")).unwrap())
        .await;
    let mut ledger = t.client(Some(&day.token)).await.ledger;
    let read = ledger.get_head(pb::GetHeadRequest {}).await;
    refused(read, Code::Unauthenticated, "TOKEN_EXPIRED");
    assert_eq!(
        to_renew(&t, now + 10 * DAY).await,
        std::slice::from_ref(&day.credential_id)
    );

    // The operator's bootstrap credential, written by `serve` on an empty store, is the
    // root every other one is issued from: it does not expire.
    t.set_now(now + 5_000 * DAY);
    head(&t.op).await;
    let mut reg = t.op.registry.clone();
    let listed = reg
        .list_credentials(pb::ListCredentialsRequest::default())
        .await;
    let listed = listed.unwrap().into_inner().credentials;
    let operator: Vec<_> = listed
        .iter()
        .filter(|c| c.role == pb::Role::Operator as i32)
        .collect();
    assert_eq!(operator.len(), 1);
    assert_eq!(operator[0].expires_at_ms, 0);
    t.stop().await;
}

/// `serve --credential-days` sets the longest lifetime; the command line issues and lists
/// with lifetimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_lifetime_is_the_servers_and_the_cli_shows_lifetimes() {
    let t = TestServer::start_tuned(|c| c.engine.rules.credential_lifetime_ms = 30 * DAY).await;
    let now = T0 + DAY;
    registry(&t).await;
    let mut reg = t.op.registry.clone();
    let month = reg
        .issue_credential(issue(pb::Role::Commanditaire, 1, 0))
        .await;
    assert_eq!(month.unwrap().into_inner().expires_at_ms, now + 30 * DAY);
    let too_long = refused(
        reg.issue_credential(issue(pb::Role::Commanditaire, 1, 31))
            .await,
        Code::InvalidArgument,
        "CREDENTIAL_LIFETIME_OUT_OF_RANGE",
    );
    assert_eq!(metadata(&too_long, "longest_days"), "30");

    let op = t.cli_as(&t.operator_token);
    let cli = |args: &[&str]| op.ok(args);
    let args = [
        "credential",
        "--role",
        "site",
        "--actor",
        "1",
        "--valid-days",
        "2",
    ];
    let issued = json(cli(&args));
    assert_eq!(issued["expires_at_ms"], now + 2 * DAY);
    // 2026-01-02 + 2 days ends before 2026-01-05, the month's credential after.
    let listed = cli(&["credentials", "--expiring-before", "2026-01-05"]);
    let listed: Vec<_> = listed.lines().map(|l| json(l.to_owned())).collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["credential_id"], issued["credential_id"]);
    assert_eq!(listed[0]["expires_at_ms"], now + 2 * DAY);
    let site = t.cli_as(issued["token"].as_str().unwrap());
    let own = json(site.ok(&["whoami"]));
    assert_eq!(
        (&own["credential_id"], &own["role"], &own["expires_at_ms"]),
        (
            &issued["credential_id"],
            &"ROLE_SITE".into(),
            &(now + 2 * DAY).into()
        )
    );
    // For people: this machine's clock is past the test's January 2026.
    let text = op.text(&["credentials"]);
    let id = issued["credential_id"].as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with(id) && l.ends_with("expired at 2026-01-04T00:00:00Z")),
        "{text}"
    );
    assert!(
        text.contains("ROLE_OPERATOR 0  live, never expires"),
        "{text}"
    );
    let bad = op.output(&["credentials", "--expiring-before", "2026-02-30"]);
    assert_eq!(bad.status.code(), Some(2));
    // A device's sync warns while its token nears its end, and once the token is refused
    // sends nothing: every scan would come back unanswered.
    let dir = tempfile::tempdir().unwrap();
    let (scans, results) = (dir.path().join("scans.csv"), dir.path().join("results.csv"));
    let row = format!("request_id,scanned_at,code,site_id,service\ns-1,{now},PN1:X,1,aide\n");
    std::fs::write(&scans, row).unwrap();
    let (scans, results) = (scans.to_str().unwrap(), results.to_str().unwrap());
    let sync = site.output(&["sync-scans", scans, "--out", results]);
    let said = String::from_utf8_lossy(&sync.stderr);
    assert_eq!(sync.status.code(), Some(0), "{said}");
    assert!(
        said.contains("warning: this token expires at 2026-01-04T00:00:00Z"),
        "{said}"
    );
    std::fs::remove_file(results).unwrap();
    t.set_now(now + 2 * DAY);
    let sync = site.output(&["sync-scans", scans, "--out", results]);
    let said = String::from_utf8_lossy(&sync.stderr);
    assert_eq!(sync.status.code(), Some(1), "{said}");
    assert!(said.contains("TOKEN_EXPIRED"), "{said}");
    assert!(!std::path::Path::new(results).exists());
    t.stop().await;

    // The server's flag is bounded.
    for days in ["0", "1831"] {
        serve_refuses("--credential-days", days, "1..=1830");
    }
}

/// A revoked credential can send nothing more, so the answers remembered for its requests
/// (memory that would otherwise grow with every request ever made) go at the sweep of the
/// second day after; its token is still refused, the other credentials' retries still get
/// their first answers, and the ledger agrees when restarted from its index or its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credentials_requests_are_forgotten_by_the_sweep_two_days_on() {
    let mut t = TestServer::start().await;
    let now = T0 + DAY;
    registry(&t).await;
    let (_, p) = order(&t, 1, 10, true).await;
    let mut reg = t.op.registry.clone();
    let lost = reg.issue_credential(issue(pb::Role::Site, 1, 0)).await;
    let lost = lost.unwrap().into_inner();
    let kept = reg.issue_credential(issue(pb::Role::Site, 1, 0)).await;
    let kept = kept.unwrap().into_inner();
    let with_id = |code: &str, id: &str| pb::RedeemRequest {
        request_id: id.into(),
        ..redeem_req(code, 1, None, "aide")
    };
    let mut tablet = t.client(Some(&lost.token)).await.redemptions;
    tablet.redeem(with_id(&p[0].code, "a1")).await.unwrap();
    tablet.redeem(with_id(&p[1].code, "a2")).await.unwrap();
    let mut desk = t.client(Some(&kept.token)).await.redemptions;
    let first = desk.redeem(with_id(&p[2].code, "b1")).await.unwrap();
    let sweep = |t: &TestServer| {
        let mut issuance = t.op.issuance.clone();
        async move {
            let r = issuance.run_expiry_sweep(pb::RunExpirySweepRequest {});
            let r = r.await.unwrap().into_inner();
            (r.credentials_forgotten, r.requests_remembered)
        }
    };
    let (_, all) = sweep(&t).await;
    reg.revoke_credential(pb::RevokeCredentialRequest {
        request_id: rid(),
        credential_id: lost.credential_id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        sweep(&t).await,
        (0, all + 1),
        "the revocation is remembered too"
    );
    t.set_now(now + 2 * DAY - 1);
    assert_eq!(
        sweep(&t).await,
        (0, all + 1),
        "kept until the second day after"
    );
    t.set_now(now + 2 * DAY);
    assert_eq!(
        sweep(&t).await,
        (1, all - 1),
        "the tablet's two requests are gone"
    );
    assert_eq!(sweep(&t).await, (0, all - 1), "once");
    let retried = tablet.redeem(with_id(&p[0].code, "a1")).await;
    refused(retried, Code::Unauthenticated, "TOKEN_REVOKED");
    let seq = head(&t.op).await.seq;
    let again = desk.redeem(with_id(&p[2].code, "b1")).await.unwrap();
    assert_eq!(
        again.into_inner(),
        first.into_inner(),
        "the desk's first answer"
    );
    assert_eq!(head(&t.op).await.seq, seq, "answered from memory");

    t.restart().await;
    assert_eq!(sweep(&t).await, (0, all - 1), "restarted from the index");
    t.restart_after(|dir| std::fs::remove_dir_all(dir.join("index")).unwrap())
        .await;
    assert_eq!(sweep(&t).await, (0, all - 1), "replayed from the log");
    assert_chain_verifies(&t).await;
    t.stop().await;
}
