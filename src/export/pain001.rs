//! The SEPA credit transfer file, ISO 20022 pain.001.001.03, for one clearing run: one
//! transaction per open settlement of a structure with a verified IBAN. EndToEndId is the
//! settlement's reference; the remittance text repeats it with the line count and the
//! Merkle root, so a structure can check its lines against what its bank statement says.

use super::{euros_dot, hex, iso_date, iso_datetime, Export, SETTLEMENTS_PER_PART};
use crate::domain::reports::{payable, run_settlements};
use crate::domain::*;

/// The operator's account the transfers are paid from.
#[derive(Clone, Debug)]
pub struct Debtor {
    pub name: String,
    pub iban: Iban,
    /// Optional in SEPA since 2016 ("IBAN only"); written when given.
    pub bic: Option<String>,
}

/// A BIC: 4 letters (bank), 2 (country), 2 letters or digits (place), optional 3 (branch).
pub fn parse_bic(text: &str) -> Result<String, &'static str> {
    let b = text.trim().to_ascii_uppercase();
    let ok = matches!(b.len(), 8 | 11)
        && b.bytes().take(6).all(|c| c.is_ascii_uppercase())
        && b.bytes().skip(6).all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(b)
    } else {
        Err("a BIC is 8 or 11 letters and digits, the first 6 letters")
    }
}

pub struct PaymentFile {
    /// Each transaction's settlement and creditor, fixed when the file is planned: a
    /// structure's IBAN changed while the file streams does not mix into it.
    settlements: Vec<(SettlementId, Label, Iban)>,
    header: Option<String>,
    next: usize,
}

impl PaymentFile {
    /// Fixes the file's transactions: the run's open settlements to verified IBANs, as they
    /// are now. Nothing to pay is `None`: a pain.001 holds at least one transaction.
    pub fn plan(
        state: &State,
        cut_off: Timestamp,
        debtor: &Debtor,
        created: Timestamp,
        execution_days: i32,
    ) -> Option<PaymentFile> {
        let settlements: Vec<&Settlement> = run_settlements(state, cut_off)
            .filter(|s| payable(state, s))
            .collect();
        if settlements.is_empty() {
            return None;
        }
        let sum = Cents(settlements.iter().map(|s| s.total.0).sum());
        let n = settlements.len();
        let day = iso_date(cut_off.0.div_euclid(Timestamp::MS_PER_DAY) as i32).replace('-', "");
        // Unique per file: the run and the ledger position it was made at.
        let msg_id = format!("PN-{day}-{}", state.seq);
        let agent = match &debtor.bic {
            Some(bic) => format!("<BIC>{bic}</BIC>"),
            None => "<Othr><Id>NOTPROVIDED</Id></Othr>".to_owned(),
        };
        let header = format!(
            concat!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\" ",
                "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n",
                "<CstmrCdtTrfInitn>\n",
                "<GrpHdr><MsgId>{msg}</MsgId><CreDtTm>{created}</CreDtTm>",
                "<NbOfTxs>{n}</NbOfTxs><CtrlSum>{sum}</CtrlSum>",
                "<InitgPty><Nm>{name}</Nm></InitgPty></GrpHdr>\n",
                "<PmtInf><PmtInfId>{msg}</PmtInfId><PmtMtd>TRF</PmtMtd>",
                "<BtchBookg>false</BtchBookg><NbOfTxs>{n}</NbOfTxs><CtrlSum>{sum}</CtrlSum>",
                "<PmtTpInf><SvcLvl><Cd>SEPA</Cd></SvcLvl></PmtTpInf>",
                "<ReqdExctnDt>{exec}</ReqdExctnDt>",
                "<Dbtr><Nm>{name}</Nm></Dbtr>",
                "<DbtrAcct><Id><IBAN>{iban}</IBAN></Id></DbtrAcct>",
                "<DbtrAgt><FinInstnId>{agent}</FinInstnId></DbtrAgt>",
                "<ChrgBr>SLEV</ChrgBr>\n"
            ),
            msg = msg_id,
            created = iso_datetime(created),
            n = n,
            sum = euros_dot(sum),
            name = sepa_text(&debtor.name, 70),
            exec = iso_date(execution_days),
            iban = debtor.iban.as_str(),
            agent = agent,
        );
        Some(PaymentFile {
            settlements: settlements
                .iter()
                .map(|s| {
                    let st = &state.structures[&s.structure];
                    let iban = st.iban.clone().expect("payable structures have an IBAN");
                    (s.id, st.name.clone(), iban)
                })
                .collect(),
            header: Some(header),
            next: 0,
        })
    }

    pub fn transactions(&self) -> usize {
        self.settlements.len()
    }
}

impl Export for PaymentFile {
    fn next(&mut self, state: &State, out: &mut Vec<u8>) -> bool {
        if let Some(h) = self.header.take() {
            out.extend_from_slice(h.as_bytes());
            return true;
        }
        let end = (self.next + SETTLEMENTS_PER_PART).min(self.settlements.len());
        for (id, name, iban) in &self.settlements[self.next..end] {
            transaction(out, &state.settlements[id], name, iban);
        }
        self.next = end;
        if end < self.settlements.len() {
            return true;
        }
        out.extend_from_slice(b"</PmtInf>\n</CstmrCdtTrfInitn>\n</Document>\n");
        false
    }
}

fn transaction(out: &mut Vec<u8>, s: &Settlement, creditor: &Label, iban: &Iban) {
    let remittance = format!(
        "Pass numerique {} {} pass racine {}",
        s.reference,
        s.lines.len(),
        hex(&s.merkle_root)
    );
    let tx = format!(
        concat!(
            "<CdtTrfTxInf><PmtId><InstrId>{r}</InstrId><EndToEndId>{r}</EndToEndId></PmtId>",
            "<Amt><InstdAmt Ccy=\"EUR\">{amount}</InstdAmt></Amt>",
            "<Cdtr><Nm>{name}</Nm></Cdtr>",
            "<CdtrAcct><Id><IBAN>{iban}</IBAN></Id></CdtrAcct>",
            "<RmtInf><Ustrd>{ustrd}</Ustrd></RmtInf></CdtTrfTxInf>\n"
        ),
        r = sepa_text(&s.reference, 35),
        amount = euros_dot(s.total),
        name = sepa_text(creditor.as_str(), 70),
        iban = iban.as_str(),
        ustrd = sepa_text(&remittance, 140),
    );
    out.extend_from_slice(tx.as_bytes());
}

/// Text in the SEPA character set (Latin letters, digits, `/ - ? : ( ) . , ' +` and space),
/// French accents transliterated, at most `max` characters, XML-escaped.
pub fn sepa_text(s: &str, max: usize) -> String {
    let mut plain = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            'a'..='z'
            | 'A'..='Z'
            | '0'..='9'
            | '/'
            | '-'
            | '?'
            | ':'
            | '('
            | ')'
            | '.'
            | ','
            | '+'
            | ' ' => plain.push(ch),
            '\'' | '’' => plain.push('\''),
            'à' | 'â' | 'ä' => plain.push('a'),
            'À' | 'Â' | 'Ä' => plain.push('A'),
            'é' | 'è' | 'ê' | 'ë' => plain.push('e'),
            'É' | 'È' | 'Ê' | 'Ë' => plain.push('E'),
            'î' | 'ï' => plain.push('i'),
            'Î' | 'Ï' => plain.push('I'),
            'ô' | 'ö' => plain.push('o'),
            'Ô' | 'Ö' => plain.push('O'),
            'ù' | 'û' | 'ü' => plain.push('u'),
            'Ù' | 'Û' | 'Ü' => plain.push('U'),
            'ç' => plain.push('c'),
            'Ç' => plain.push('C'),
            'œ' => plain.push_str("oe"),
            'Œ' => plain.push_str("OE"),
            'æ' => plain.push_str("ae"),
            'Æ' => plain.push_str("AE"),
            'ÿ' => plain.push('y'),
            _ => plain.push(' '),
        }
    }
    let clipped: String = plain.trim().chars().take(max).collect();
    clipped.replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sepa_text_transliterates_and_clips() {
        assert_eq!(
            sepa_text("Médiathèque d’Œuvre & Cie", 70),
            "Mediatheque d&apos;OEuvre   Cie"
        );
        assert_eq!(sepa_text("abcdef", 3), "abc");
    }

    #[test]
    fn bics_are_checked() {
        assert_eq!(parse_bic("bnpafrpp"), Ok("BNPAFRPP".to_owned()));
        assert!(parse_bic("BNPAFRPPXXX").is_ok());
        assert!(parse_bic("BNP1FRPP").is_err());
        assert!(parse_bic("BNPAFRP").is_err());
    }
}
