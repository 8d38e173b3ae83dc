//! Disk full: on a small filesystem (a 24 MiB tmpfs mounted for the test, which needs root,
//! as CI has), a write the disk refuses is answered UNAVAILABLE / DISK_FULL, nothing
//! acknowledged is lost, the chain still verifies, and once space is freed the service
//! resumes by itself; the refused request, retried with its id, is applied once.

mod common;
use common::*;
use passnum::rpc::pb;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

/// `program` as root: directly when the tests run as root (CI), else through `sudo -n`.
fn privileged(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

struct Mount(tempfile::TempDir);

impl Mount {
    fn tmpfs(size: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let out = privileged("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs: it needs root or passwordless sudo (CI has it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = privileged("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Fills the filesystem with a ballast file until it refuses more.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xA5u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_service_resumes_when_space_returns() {
    let mount = Mount::tmpfs("24m");
    let t = TestServer::start_in(mount.path(), |_| {}).await;
    registry(&t).await;
    let (_, passes) = order(&t, 1, 300, true).await;
    let site = t.credential(pb::Role::Structure, 1, &[]).await;
    let ballast = mount.path().join("ballast");
    fill(&ballast);

    // Redeem until the disk says no.
    let mut acknowledged = vec![];
    let mut refused_at = None;
    for (i, p) in passes.iter().enumerate() {
        let req = redeem_req(&p.code, 1, None, "aide");
        match site.redemptions.clone().redeem(req.clone()).await {
            Ok(_) => acknowledged.push(p.serial.clone()),
            Err(s) => {
                assert_eq!(
                    s.code(),
                    Code::Unavailable,
                    "{}",
                    passnum::client::describe(&s)
                );
                assert_eq!(passnum::client::reason(&s), "DISK_FULL");
                refused_at = Some((i, req));
                break;
            }
        }
    }
    let (i, req) = refused_at.expect("the disk filled up before the passes ran out");

    // While it is full, writes keep being refused with the same clear status.
    let next = redeem_req(&passes[i + 1].code, 1, None, "aide");
    let err = site.redemptions.clone().redeem(next).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);

    // Space returns: the service resumes by itself.
    std::fs::remove_file(&ballast).unwrap();
    let start = Instant::now();
    loop {
        match site.redemptions.clone().redeem(req.clone()).await {
            Ok(_) => break,
            Err(s) if s.code() == Code::Unavailable => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "the service did not resume"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("{}", passnum::client::describe(&s)),
        }
    }
    // The retried request was applied once: the same id again gives the same answer.
    site.redemptions.clone().redeem(req).await.unwrap();

    // Nothing acknowledged was lost, and the chain and the money still verify.
    let now = passes_of(&t).await;
    for serial in &acknowledged {
        assert_eq!(
            now[serial],
            pb::PassStatus::Redeemed as i32,
            "pass {serial} lost"
        );
    }
    assert_eq!(now[&passes[i].serial], pb::PassStatus::Redeemed as i32);
    assert_chain_verifies(&t).await;
    t.stop().await;
}

async fn passes_of(t: &TestServer) -> std::collections::HashMap<String, i32> {
    passes(&t.op, 1)
        .await
        .into_iter()
        .map(|p| (p.serial, p.status))
        .collect()
}
