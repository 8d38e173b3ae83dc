//! What every request's authentication and site check reads: the credentials, and which
//! structure runs each site. The writer republishes it after a durable batch that changed
//! either, so handlers read it without the state's lock, which the writer holds while it
//! decides a batch (a reader blocked there stalls a whole runtime worker).

use crate::domain::{Credential, Fact, RecordBody, SiteId, State, StructureId};
use std::collections::HashMap;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Directory {
    pub credentials: HashMap<[u8; 32], Credential>,
    pub site_structures: HashMap<SiteId, StructureId>,
}

impl Directory {
    pub fn of(state: &State) -> Directory {
        Directory {
            credentials: state.credentials.clone(),
            site_structures: state.sites.values().map(|s| (s.id, s.structure)).collect(),
        }
    }

    /// Whether applying `body` may change the directory.
    pub fn changed_by(body: &RecordBody) -> bool {
        body.facts.iter().any(|f| {
            matches!(
                f,
                Fact::CredentialIssued { .. }
                    | Fact::CredentialRevoked { .. }
                    | Fact::CredentialExpires { .. }
                    | Fact::SiteRegistered(_)
                    | Fact::SiteUpdated(_)
            )
        })
    }
}
