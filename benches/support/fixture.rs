//! What the benches share: one clock origin, labels, an order of the Gironde commanditaire
//! (id 1) usable anywhere in département 33, and redeemed passes made from a number.

use passnum::domain::*;

/// 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000;

pub fn l(s: &str) -> Label {
    Label::parse(s).unwrap()
}

/// An order of `pass_count` 10 € passes in carnets of 10, valid `valid_days` from `T0`.
pub fn gironde_order(pass_count: u32, valid_days: i64) -> Command {
    Command::CreateOrder(NewOrder {
        commanditaire: CommanditaireId(1),
        pass_count,
        carnet_size: 10,
        face_value: Cents(1000),
        valid_from: Timestamp(T0),
        valid_until: Timestamp(T0 + valid_days * Timestamp::MS_PER_DAY),
        grace_days: 31,
        perimeter: Perimeter {
            departements: [Departement::parse("33").unwrap()].into(),
            ..Default::default()
        },
        services: Default::default(),
        programme: l("p"),
    })
}

/// The `i`th of a run of serials spread like minted ones (random), deterministically.
#[allow(dead_code)] // the clearing bench mints its passes through the ledger
pub fn spread_serial(i: u64) -> Serial {
    Serial::from_random(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A pass of order `1 + i / 100 000`, redeemed at one of 1 000 sites of 100 structures.
#[allow(dead_code)] // the clearing bench mints its passes through the ledger
pub fn redeemed_pass(i: u64) -> Pass {
    Pass {
        serial: spread_serial(i),
        order: OrderId(1 + i / 100_000),
        index: (i % 100_000) as u32,
        status: PassStatus::Redeemed,
        redeemed: Some(Box::new(LiveRedemption {
            redemption: Redemption {
                at: Timestamp(T0 + i as i64),
                site: SiteId(1 + i % 1000),
                structure: StructureId(1 + i % 100),
                stop: None,
                commune: InseeCode::parse("33063").unwrap(),
                service: ServiceCode::parse("aide").unwrap(),
                workshop: None,
                settlement: None,
            },
            recorded_at: Timestamp(T0 + i as i64),
        })),
        closed_at: None,
    }
}
