//! Workshops held offline, in the same file as the scans: a row whose `session` is set is
//! one pass of that workshop. A session's rows are sent together, as one `RedeemWorkshop`
//! whose request id is the session's (the id the device gave it when it was held), so a
//! session sent again is answered the same way; each row gets its own pass's outcome.

use super::{ours, Answer, Row, Scan};
use crate::domain::Timestamp;
use crate::rpc::pb;
use std::collections::HashMap;
use tonic::Status;

/// The session's columns: all empty on a single scan's row.
pub const COLUMNS: [&str; 7] = [
    "session",
    "date",
    "start",
    "duration_minutes",
    "themes",
    "participants",
    "mediator_id",
];

/// A workshop as the device recorded it: the facts a conseiller numérique's activity
/// report carries (`date` local YYYY-MM-DD, `start` HH:MM), no names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Its request id.
    pub id: String,
    pub date: String,
    pub start: String,
    pub duration_minutes: u32,
    pub themes: Vec<String>,
    pub participants: u32,
    pub mediator_id: String,
}

/// A row's session, if it has one. Its themes are `|`-separated, as in the open data;
/// without any, the row's `service` is its one theme. The server judges the values.
pub fn read<'r>(get: &dyn Fn(&str) -> &'r str, service: &str) -> Result<Option<Session>, String> {
    let id = get("session");
    if id.is_empty() {
        return match COLUMNS[1..].iter().find(|c| !get(c).is_empty()) {
            Some(c) => Err(format!(
                "{c}: a workshop's field, and the row has no session"
            )),
            None => Ok(None),
        };
    }
    let number = |name: &str| -> Result<u32, String> {
        get(name)
            .parse()
            .map_err(|_| format!("{name}: not a number"))
    };
    let mut themes: Vec<String> = get("themes")
        .split('|')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if themes.is_empty() && !service.is_empty() {
        themes.push(service.to_owned());
    }
    Ok(Some(Session {
        id: id.to_owned(),
        date: get("date").to_owned(),
        start: get("start").to_owned(),
        duration_minutes: number("duration_minutes")?,
        themes,
        participants: number("participants")?,
        mediator_id: get("mediator_id").to_owned(),
    }))
}

/// One session's rows, in file order: they agree on the session and the place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workshop {
    pub session: Session,
    pub scans: Vec<Scan>,
}

/// What one request sends: a scan on its own, or a whole workshop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sending {
    Scan(Scan),
    Workshop(Workshop),
}

/// Groups each session's rows into its workshop, in the order sessions first appear.
/// A session whose rows disagree on its facts or its place is not sent: each of its rows
/// says on what, and where, so the device's export can be mended.
pub fn group(scans: Vec<Scan>) -> (Vec<Sending>, Vec<Row>) {
    let (mut sendings, mut invalid) = (vec![], vec![]);
    let mut sessions: Vec<Vec<Scan>> = vec![];
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for s in scans {
        match &s.session {
            None => sendings.push(Sending::Scan(s)),
            Some(session) => {
                let at = *by_id.entry(session.id.clone()).or_insert_with(|| {
                    sessions.push(vec![]);
                    sessions.len() - 1
                });
                sessions[at].push(s);
            }
        }
    }
    for scans in sessions {
        match disagreement(&scans) {
            None => sendings.push(Sending::Workshop(Workshop {
                session: scans[0].session.clone().expect("grouped by session"),
                scans,
            })),
            Some(field) => {
                let lines: Vec<String> = scans.iter().map(|s| s.line.to_string()).collect();
                let id = &scans[0].session.as_ref().expect("grouped by session").id;
                let message = format!(
                    "session {id}: its rows (lines {}) disagree on {field}",
                    lines.join(", ")
                );
                invalid.extend(scans.into_iter().map(|s| Row {
                    line: s.line,
                    request_id: s.request_id,
                    answer: Answer::Invalid {
                        message: message.clone(),
                    },
                }));
            }
        }
    }
    (sendings, invalid)
}

/// The first field on which a row differs from the session's first row.
fn disagreement(scans: &[Scan]) -> Option<&'static str> {
    let first = &scans[0];
    let a = first.session.as_ref()?;
    scans[1..].iter().find_map(|s| {
        let b = s.session.as_ref()?;
        let fields = [
            ("site_id", s.site_id == first.site_id),
            ("stop", s.stop == first.stop),
            ("insee", s.insee == first.insee),
            ("date", b.date == a.date),
            ("start", b.start == a.start),
            ("duration_minutes", b.duration_minutes == a.duration_minutes),
            ("themes", b.themes == a.themes),
            ("participants", b.participants == a.participants),
            ("mediator_id", b.mediator_id == a.mediator_id),
        ];
        fields.into_iter().find(|(_, same)| !same).map(|(f, _)| f)
    })
}

impl Workshop {
    /// When the device recorded the session: its first scan. The same file gives the same
    /// time, so a session sent again is the same request.
    pub fn held_at(&self) -> Timestamp {
        self.scans
            .iter()
            .map(|s| s.scanned_at)
            .min()
            .expect("a session has a row")
    }

    pub fn request(&self) -> pb::RedeemWorkshopRequest {
        let (first, s) = (&self.scans[0], &self.session);
        pb::RedeemWorkshopRequest {
            request_id: s.id.clone(),
            site_id: first.site_id,
            place: Some(first.place()),
            date: s.date.clone(),
            start: s.start.clone(),
            duration_minutes: s.duration_minutes,
            themes: s.themes.clone(),
            participants: s.participants,
            mediator_id: s.mediator_id.clone(),
            passes: self.scans.iter().map(Scan::code).collect(),
            held_at_ms: self.held_at().0,
        }
    }

    /// Each row's answer: its pass's outcome, or, when the session as a whole was refused
    /// or went unanswered, that for every row.
    pub fn answers(self, reply: Result<pb::RedeemWorkshopResponse, Status>) -> Vec<Row> {
        let (held_at, site) = (self.held_at(), self.scans[0].site_id);
        let outcomes = match reply {
            Ok(r) if r.outcomes.len() == self.scans.len() => r.outcomes,
            Ok(r) => {
                let message = format!(
                    "the server answered {} outcomes for {} passes: run the sync again",
                    r.outcomes.len(),
                    self.scans.len()
                );
                return rows(self.scans, |_| Answer::Unanswered {
                    message: message.clone(),
                });
            }
            Err(status) => return rows(self.scans, |_| super::answer_of(&status)),
        };
        let mut outcomes = outcomes.into_iter();
        rows(self.scans, |_| {
            answer(outcomes.next().expect("counted"), held_at, site)
        })
    }
}

fn rows(scans: Vec<Scan>, mut answer: impl FnMut(&Scan) -> Answer) -> Vec<Row> {
    scans
        .into_iter()
        .map(|s| Row {
            line: s.line,
            answer: answer(&s),
            request_id: s.request_id,
        })
        .collect()
}

/// One pass's outcome. Refused `ALREADY_REDEEMED` with this session's site and time as
/// evidence, it was redeemed by an earlier sync of this session (under another token).
fn answer(o: pb::PassOutcome, held_at: Timestamp, site: u64) -> Answer {
    if o.redeemed {
        return Answer::Redeemed {
            serial: o.serial,
            redeemed_at_ms: o.redeemed_at_ms,
            earlier: false,
        };
    }
    if ours(&o.reason, &o.metadata, held_at, site) {
        return Answer::Redeemed {
            serial: o.serial,
            redeemed_at_ms: held_at.0,
            earlier: true,
        };
    }
    Answer::Refused {
        reason: o.reason,
        message: o.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "request_id,scanned_at,code,site_id,stop,service,session,date,start,\
                          duration_minutes,themes,participants,mediator_id\n";

    fn file(rows: &[&str]) -> (Vec<Scan>, Vec<Row>) {
        super::super::read(&format!("{HEADER}{}\n", rows.join("\n"))).unwrap()
    }

    #[test]
    fn a_sessions_rows_make_one_workshop_held_at_its_first_scan() {
        let (scans, invalid) = file(&[
            "bus-1,1767254400000,C1,2,0,aide,,,,,,,",
            ",1767258000000,C2,2,0,,ws-1,2026-01-01,10:00,120,messagerie| demarches ,8,CNFS-1",
            "bus-2,1767254400001,C3,2,0,aide,,,,,,,",
            ",1767257000000,C4,2,0,,ws-1,2026-01-01,10:00,120,messagerie|demarches,8,CNFS-1",
            ",1767257000000,C5,2,1,aide,ws-2,2026-01-01,14:00,60,,3,CNFS-1",
        ]);
        assert!(invalid.is_empty(), "{invalid:?}");
        let (sendings, invalid) = group(scans);
        assert!(invalid.is_empty());
        let kinds: Vec<String> = sendings
            .iter()
            .map(|s| match s {
                Sending::Scan(s) => s.code.clone(),
                Sending::Workshop(w) => w.session.id.clone(),
            })
            .collect();
        assert_eq!(kinds, ["C1", "C3", "ws-1", "ws-2"]);
        let Sending::Workshop(w) = &sendings[2] else {
            panic!()
        };
        let r = w.request();
        assert_eq!(r.request_id, "ws-1");
        assert_eq!(
            r.held_at_ms, 1_767_257_000_000,
            "its earliest scan, not its first row"
        );
        assert_eq!((r.site_id, r.place.clone().unwrap().stop), (2, Some(0)));
        assert_eq!(
            (r.date.as_str(), r.start.as_str(), r.duration_minutes),
            ("2026-01-01", "10:00", 120)
        );
        assert_eq!(r.themes, ["messagerie", "demarches"]);
        assert_eq!((r.participants, r.mediator_id.as_str()), (8, "CNFS-1"));
        let codes: Vec<_> = r.passes.iter().map(|p| p.form.clone().unwrap()).collect();
        assert_eq!(
            codes,
            [
                pb::pass_code::Form::Scanned("C2".into()),
                pb::pass_code::Form::Scanned("C4".into())
            ]
        );
        let Sending::Workshop(w2) = &sendings[3] else {
            panic!()
        };
        assert_eq!(
            w2.session.themes,
            ["aide"],
            "without themes, the row's service"
        );
    }

    #[test]
    fn a_session_whose_rows_disagree_is_not_sent_and_each_row_says_why() {
        let (scans, _) = file(&[
            ",1767257000000,C1,2,0,,ws-1,2026-01-01,10:00,120,aide,8,CNFS-1",
            ",1767257000000,C2,2,0,,ws-2,2026-01-01,10:00,120,aide,8,CNFS-1",
            ",1767257000000,C3,2,0,,ws-1,2026-01-01,10:00,120,aide,9,CNFS-1",
            ",1767257000000,C4,2,1,,ws-2,2026-01-01,10:00,120,aide,8,CNFS-1",
        ]);
        let (sendings, invalid) = group(scans);
        assert!(sendings.is_empty());
        let said: Vec<(u32, String)> = invalid
            .into_iter()
            .map(|r| match r.answer {
                Answer::Invalid { message } => (r.line, message),
                a => panic!("{a:?}"),
            })
            .collect();
        let one = "session ws-1: its rows (lines 2, 4) disagree on participants";
        let two = "session ws-2: its rows (lines 3, 5) disagree on stop";
        assert_eq!(
            said,
            [
                (2, one.into()),
                (4, one.into()),
                (3, two.into()),
                (5, two.into())
            ]
        );
    }

    #[test]
    fn a_row_with_a_workshops_fields_needs_its_session_and_numbers_where_numbers_go() {
        let (scans, invalid) = file(&[
            "bus-1,1767254400000,C1,2,0,aide,,2026-01-01,,,,,",
            "bus-2,1767254400000,C2,2,0,aide,ws-1,2026-01-01,10:00,deux heures,aide,8,CNFS-1",
            "bus-3,1767254400000,C3,2,0,aide,ws-1,2026-01-01,10:00,120,aide,,CNFS-1",
        ]);
        assert!(scans.is_empty());
        let messages: Vec<String> = invalid
            .into_iter()
            .map(|r| match r.answer {
                Answer::Invalid { message } => message,
                a => panic!("{a:?}"),
            })
            .collect();
        assert_eq!(
            messages,
            [
                "date: a workshop's field, and the row has no session",
                "duration_minutes: not a number",
                "participants: not a number"
            ]
        );
    }

    fn workshop(rows: usize) -> Workshop {
        let lines: Vec<String> = (0..rows)
            .map(|i| format!("r{i},1767257000000,C{i},2,0,,ws-1,2026-01-01,10:00,60,aide,4,M"))
            .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let Sending::Workshop(w) = group(file(&lines).0).0.remove(0) else {
            panic!()
        };
        w
    }

    #[test]
    fn each_row_gets_its_passs_outcome_and_an_earlier_syncs_redemption_is_told_apart() {
        let held = 1_767_257_000_000_i64;
        let refused = |reason: &str, at: i64, site: &str| pb::PassOutcome {
            serial: "S".into(),
            reason: reason.into(),
            message: "m".into(),
            metadata: HashMap::from([
                ("redeemed_at_ms".to_owned(), at.to_string()),
                ("site".to_owned(), site.to_owned()),
            ]),
            ..Default::default()
        };
        let reply = pb::RedeemWorkshopResponse {
            outcomes: vec![
                pb::PassOutcome {
                    serial: "S0".into(),
                    redeemed: true,
                    redeemed_at_ms: held,
                    amount_cents: 1000,
                    ..Default::default()
                },
                refused("ALREADY_REDEEMED", held, "2"),
                refused("ALREADY_REDEEMED", held, "1"),
                refused("ALREADY_REDEEMED", held + 1, "2"),
                refused("OUTSIDE_PERIMETER", held, "2"),
            ],
            ..Default::default()
        };
        let rows = workshop(5).answers(Ok(reply));
        let answers: Vec<Answer> = rows.into_iter().map(|r| r.answer).collect();
        let refusal = |reason: &str| Answer::Refused {
            reason: reason.into(),
            message: "m".into(),
        };
        assert_eq!(
            answers,
            [
                Answer::Redeemed {
                    serial: "S0".into(),
                    redeemed_at_ms: held,
                    earlier: false
                },
                Answer::Redeemed {
                    serial: "S".into(),
                    redeemed_at_ms: held,
                    earlier: true
                },
                refusal("ALREADY_REDEEMED"),
                refusal("ALREADY_REDEEMED"),
                refusal("OUTSIDE_PERIMETER"),
            ]
        );
    }

    #[test]
    fn a_session_refused_or_unanswered_as_a_whole_says_so_on_every_row() {
        let refused = crate::rpc::errors::limit("workshop_passes", 2, 3);
        let rows = workshop(3).answers(Err(refused));
        assert!(rows.iter().all(|r| matches!(
            &r.answer,
            Answer::Refused { reason, .. } if reason == "LIMIT_EXCEEDED"
        )));
        let rows = workshop(2).answers(Err(Status::unavailable("down")));
        assert!(rows
            .iter()
            .all(|r| matches!(r.answer, Answer::Unanswered { .. })));
        let short = pb::RedeemWorkshopResponse {
            outcomes: vec![pb::PassOutcome::default()],
            ..Default::default()
        };
        let rows = workshop(2).answers(Ok(short));
        assert!(rows.iter().all(|r| matches!(
            &r.answer,
            Answer::Unanswered { message } if message.contains("1 outcomes for 2 passes")
        )));
        assert_eq!(
            rows.iter()
                .map(|r| r.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r0", "r1"]
        );
    }
}
