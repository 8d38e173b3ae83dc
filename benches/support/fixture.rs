//! What the ledger and clearing benches both set up: one clock origin, labels, and an order
//! of the Gironde commanditaire (id 1) usable anywhere in département 33.

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
