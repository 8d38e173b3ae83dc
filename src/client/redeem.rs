//! Client commands for sites: check a pass, redeem one, a file of offline scans or a
//! workshop's, reverse.

use super::*;
use serde_json::json;
use std::path::PathBuf;

pub(super) async fn check(a: PassAtSite) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&a.conn).await?;
    let req = pb::CheckPassRequest {
        pass: Some(pass_code(&a.pass)?),
        site_id: a.site,
        place: place(a.stop, &a.insee),
        service: a.service,
    };
    let r = c.redemptions.check_pass(req).await?.into_inner();
    let text = if r.redeemable {
        format!("{}: redeemable", r.serial)
    } else {
        format!("{}: not redeemable: {} ({})", r.serial, r.reason, r.message)
    };
    out(
        &a.conn,
        json!({"serial": r.serial, "redeemable": r.redeemable, "reason": r.reason}),
        text,
    );
    Ok(())
}

pub(super) async fn redeem(a: PassAtSite) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&a.conn).await?;
    let req = pb::RedeemRequest {
        request_id: a.request_id.clone().unwrap_or_else(request_id),
        pass: Some(pass_code(&a.pass)?),
        site_id: a.site,
        place: place(a.stop, &a.insee),
        service: a.service,
        scanned_at_ms: 0,
    };
    let r = c.redemptions.redeem(req).await?.into_inner();
    out(
        &a.conn,
        json!({"serial": r.serial, "order_id": r.order_id, "amount_cents": r.amount_cents, "redeemed_at_ms": r.redeemed_at_ms}),
        format!(
            "{} redeemed at site {}: {} cents",
            r.serial, r.site_id, r.amount_cents
        ),
    );
    Ok(())
}

pub(super) async fn sync_scans(
    file: PathBuf,
    results: PathBuf,
    in_flight: usize,
    conn: Conn,
) -> Result<(), CliError> {
    if !(1..=crate::cli_scans::IN_FLIGHT_MAX).contains(&in_flight) {
        return Err(CliError::Usage(format!(
            "--in-flight: 1 to {}",
            crate::cli_scans::IN_FLIGHT_MAX
        )));
    }
    let c = Clients::from_conn(&conn).await?;
    let t = crate::cli_scans::sync_file(&c, &file, &results, in_flight).await?;
    out(
        &conn,
        json!({"redeemed": t.redeemed, "redeemed_earlier": t.earlier, "refused": t.refused, "invalid": t.invalid, "unanswered": t.unanswered, "results": results}),
        format!(
            "{} redeemed{}, {} refused, {} rows unreadable, {} unanswered; each scan's answer is in {}",
            t.redeemed,
            match t.earlier {
                0 => String::new(),
                n => format!(" ({n} by an earlier sync)"),
            },
            t.refused,
            t.invalid,
            t.unanswered,
            results.display()
        ),
    );
    if t.unanswered > 0 {
        return Err(CliError::Unreachable(format!(
            "{} scans got no answer: run the same sync again (each scan keeps its request id)",
            t.unanswered
        )));
    }
    Ok(())
}

pub(super) async fn workshop(a: WorkshopArgs) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&a.conn).await?;
    let passes = a
        .codes
        .iter()
        .map(|code| pb::PassCode {
            form: Some(pb::pass_code::Form::Scanned(code.clone())),
        })
        .collect();
    let req = pb::RedeemWorkshopRequest {
        request_id: a.request_id.clone().unwrap_or_else(request_id),
        site_id: a.site,
        place: place(a.stop, &a.insee),
        date: a.date,
        start: a.start,
        duration_minutes: a.duration,
        themes: a.themes,
        participants: a.participants,
        mediator_id: a.mediator,
        passes,
        held_at_ms: a.held_at.map_or(0, |t| t.0),
    };
    let r = c.redemptions.redeem_workshop(req).await?.into_inner();
    if a.conn.json {
        let outcomes: Vec<_> = r
            .outcomes
            .iter()
            .map(|o| json!({"serial": o.serial, "redeemed": o.redeemed, "reason": o.reason}))
            .collect();
        println!(
            "{}",
            json!({"workshop_id": r.workshop_id, "redeemed": r.redeemed, "amount_cents": r.amount_cents, "outcomes": outcomes})
        );
    } else {
        println!(
            "workshop {}: {} passes redeemed, {} cents",
            r.workshop_id, r.redeemed, r.amount_cents
        );
        for o in r.outcomes {
            println!(
                "  {} {}",
                o.serial,
                if o.redeemed {
                    "redeemed".to_string()
                } else {
                    format!("refused: {} ({})", o.reason, o.message)
                }
            );
        }
    }
    Ok(())
}

pub(super) async fn reverse(
    pass: PassArg,
    site: u64,
    rid: Option<String>,
    conn: Conn,
) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let req = pb::ReverseRequest {
        request_id: rid.unwrap_or_else(request_id),
        pass: Some(pass_code(&pass)?),
        site_id: site,
    };
    let r = c.redemptions.reverse(req).await?.into_inner();
    out(
        &conn,
        json!({"serial": r.serial, "amount_cents": r.amount_cents}),
        format!(
            "{} reversed: {} cents back to its order",
            r.serial, r.amount_cents
        ),
    );
    Ok(())
}
