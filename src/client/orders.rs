//! Client commands for orders and their passes: create, mint, fund, list, render, cancel,
//! mark distributed, the dashboard, the expiry sweep.

use super::*;
use serde_json::json;
use std::path::PathBuf;

pub(super) async fn order(a: OrderArgs) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&a.conn).await?;
    let req = pb::CreateOrderRequest {
        request_id: request_id(),
        commanditaire_id: a.commanditaire,
        pass_count: a.passes,
        carnet_size: a.carnet,
        face_value_cents: a.face_cents,
        valid_from_ms: date_ms("from", &a.from, false)?,
        valid_until_ms: date_ms("until", &a.until, true)?,
        grace_days: a.grace_days,
        perimeter: Some(pb::Perimeter {
            insee_codes: a.communes,
            departements: a.departements,
            site_ids: a.sites,
        }),
        services: a.services,
        programme: a.programme,
    };
    let r = c.issuance.create_order(req).await?.into_inner();
    out(
        &a.conn,
        json!({"order_id": r.order_id}),
        format!("order {} created", r.order_id),
    );
    Ok(())
}

pub(super) async fn mint(order: u64, conn: Conn) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let r = c
        .issuance
        .mint_order(pb::MintOrderRequest {
            request_id: request_id(),
            order_id: order,
        })
        .await?
        .into_inner();
    out(
        &conn,
        json!({"order_id": r.order_id, "passes": r.passes}),
        format!("order {} minted: {} passes", r.order_id, r.passes),
    );
    Ok(())
}

pub(super) async fn fund(
    order: u64,
    amount_cents: i64,
    reference: String,
    conn: Conn,
) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let req = pb::RecordFundingRequest {
        request_id: request_id(),
        order_id: order,
        amount_cents,
        reference,
    };
    let r = c.issuance.record_funding(req).await?.into_inner();
    out(
        &conn,
        json!({"activated": r.activated}),
        format!("order {order} funded: {} passes activated", r.activated),
    );
    Ok(())
}

pub(super) async fn passes(
    order: u64,
    page_size: u32,
    page_token: String,
    conn: Conn,
) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let mut stream = c
        .issuance
        .list_passes(pb::ListPassesRequest {
            order_id: order,
            page_size,
            page_token,
        })
        .await?
        .into_inner();
    while let Some(p) = stream.message().await? {
        let status = pb::PassStatus::try_from(p.status)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        out(
            &conn,
            json!({"serial": p.serial, "code": p.code, "verification_code": p.verification_code, "carnet": p.carnet, "status": status, "next_page_token": p.next_page_token}),
            format!(
                "{}  code {}  carnet {}  {}  {}",
                p.serial, p.verification_code, p.carnet, status, p.code
            ),
        );
        if !p.next_page_token.is_empty() && !conn.json {
            println!("next page: --page-token {}", p.next_page_token);
        }
    }
    Ok(())
}

pub(super) async fn render(
    serial: Option<String>,
    format: FormatArg,
    order: Option<u64>,
    carnet: Option<u32>,
    path: PathBuf,
    conn: Conn,
) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let bytes = match (serial, order) {
        (Some(serial), _) => {
            let format = match format {
                FormatArg::Svg => pb::CodeFormat::Svg,
                FormatArg::Png => pb::CodeFormat::Png,
            } as i32;
            c.issuance
                .render_code(pb::RenderCodeRequest { serial, format })
                .await?
                .into_inner()
                .image
        }
        (None, Some(order)) => {
            let mut stream = c
                .issuance
                .render_sheet(pb::RenderSheetRequest {
                    order_id: order,
                    carnet,
                })
                .await?
                .into_inner();
            let mut pdf = Vec::new();
            while let Some(chunk) = stream.message().await? {
                pdf.extend_from_slice(&chunk.data);
            }
            pdf
        }
        (None, None) => return Err(CliError::Usage("give --serial or --order".into())),
    };
    std::fs::write(&path, &bytes)
        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    out(
        &conn,
        json!({"file": path, "bytes": bytes.len()}),
        format!("wrote {} ({} bytes)", path.display(), bytes.len()),
    );
    Ok(())
}

pub(super) async fn cancel(
    serials: Vec<String>,
    order: Option<u64>,
    carnet: Option<u32>,
    conn: Conn,
) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let req = pb::CancelPassesRequest {
        request_id: request_id(),
        serials,
        order_id: order.unwrap_or(0),
        carnet,
    };
    let r = c.issuance.cancel_passes(req).await?.into_inner();
    out(
        &conn,
        json!({"cancelled": r.cancelled, "credited_cents": r.credited_cents}),
        format!(
            "{} passes cancelled, {} cents credited back",
            r.cancelled, r.credited_cents
        ),
    );
    Ok(())
}

pub(super) async fn distribute(order: u64, carnet: u32, conn: Conn) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    c.issuance
        .mark_distributed(pb::MarkDistributedRequest {
            request_id: request_id(),
            order_id: order,
            carnet,
        })
        .await?;
    out(
        &conn,
        json!({"order_id": order, "carnet": carnet}),
        format!("order {order} carnet {carnet} marked distributed"),
    );
    Ok(())
}

pub(super) async fn dashboard(order: u64, conn: Conn) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let d = c
        .issuance
        .get_dashboard(pb::GetDashboardRequest { order_id: order })
        .await?
        .into_inner();
    if conn.json {
        println!("{}", dashboard_json(&d));
    } else {
        print!("{}", dashboard_text(&d));
    }
    Ok(())
}

pub(super) async fn sweep(conn: Conn) -> Result<(), CliError> {
    let mut c = Clients::from_conn(&conn).await?;
    let r = c
        .issuance
        .run_expiry_sweep(pb::RunExpirySweepRequest {})
        .await?
        .into_inner();
    out(
        &conn,
        json!({
            "expired": r.expired,
            "credited_cents": r.credited_cents,
            "credentials_forgotten": r.credentials_forgotten,
            "requests_remembered": r.requests_remembered,
        }),
        format!(
            "{} passes expired, {} cents credited back; {} credentials' requests forgotten, {} requests remembered",
            r.expired, r.credited_cents, r.credentials_forgotten, r.requests_remembered
        ),
    );
    Ok(())
}

pub fn dashboard_json(d: &pb::Dashboard) -> serde_json::Value {
    let c = |c: &Option<pb::Count>| {
        c.as_ref().map_or(
            serde_json::json!({"passes": 0, "cents": 0}),
            |c| serde_json::json!({"passes": c.passes, "cents": c.cents}),
        )
    };
    serde_json::json!({
        "order_id": d.order_id, "issued": c(&d.issued), "activated": c(&d.activated), "redeemed": c(&d.redeemed),
        "cancelled": c(&d.cancelled), "expired": c(&d.expired), "outstanding": c(&d.outstanding),
        "carnets": d.carnets, "carnets_distributed": d.carnets_distributed, "carnets_started": d.carnets_started, "carnets_finished": d.carnets_finished,
    })
}

pub fn dashboard_text(d: &pb::Dashboard) -> String {
    let row = |name: &str, c: &Option<pb::Count>| {
        let c = c.unwrap_or_default();
        format!(
            "  {name:<12} {:>6} passes {:>14}\n",
            c.passes,
            crate::domain::Cents(c.cents).to_string()
        )
    };
    let mut s = format!(
        "order {} (commanditaire {})\n",
        d.order_id, d.commanditaire_id
    );
    for (n, c) in [
        ("issued", &d.issued),
        ("activated", &d.activated),
        ("redeemed", &d.redeemed),
        ("cancelled", &d.cancelled),
        ("expired", &d.expired),
        ("outstanding", &d.outstanding),
    ] {
        s.push_str(&row(n, c));
    }
    s.push_str(&format!(
        "  carnets      {} issued, {} handed out, {} started, {} finished\n",
        d.carnets, d.carnets_distributed, d.carnets_started, d.carnets_finished
    ));
    s
}
