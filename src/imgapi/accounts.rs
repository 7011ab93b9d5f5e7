//! The account table: a login stands for an account uuid wherever one is
//! expected (`?account=`, `owner`, `acl`, trusted accounts), as `triton`
//! users name accounts. The table is the daemon's `accounts` (when given as
//! logins) and the CloudAPI face's users; a uuid always stands for itself.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{ApiError, ApiResult, Config, parse_uuid};

impl Config {
    /// The account `name` stands for: itself when it is a uuid, else the
    /// login's uuid, else none.
    pub fn account(&self, name: &str) -> Option<Uuid> {
        parse_uuid(name).or_else(|| self.logins.get(name).copied())
    }

    /// The login of `uuid`, when the table has one.
    pub fn login_of(&self, uuid: &Uuid) -> Option<&str> {
        self.logins
            .iter()
            .find(|(_, u)| *u == uuid)
            .map(|(l, _)| l.as_str())
    }

    /// [`Config::account`], or an error for `field` in one sentence.
    pub fn resolve_account(&self, field: &str, name: &str) -> ApiResult<Uuid> {
        self.account(name)
            .ok_or_else(|| ApiError::invalid_param(field, self.unknown_account(field, name)))
    }

    /// What an unknown account is told: the value, and where logins come
    /// from when the table is empty.
    pub fn unknown_account(&self, field: &str, name: &str) -> String {
        let hint = if self.logins.is_empty() {
            " (it knows none: the daemon's \"accounts\" config names them)"
        } else {
            ""
        };
        format!(
            "{field}: {name:?} is neither an account uuid nor a login this datacenter knows{hint}"
        )
    }

    /// A list of accounts (`acl`, trusted accounts): each string a uuid or
    /// a login; anything else is left for the manifest's own checks.
    pub fn resolve_list(&self, field: &str, list: &mut [Value]) -> ApiResult<()> {
        for entry in list.iter_mut() {
            let Some(s) = entry.as_str() else { continue };
            let uuid = self.resolve_account(field, s)?;
            *entry = Value::String(uuid.to_string());
        }
        Ok(())
    }

    /// `owner` and `acl` of a manifest or an update as uuids.
    pub fn resolve_manifest(&self, m: &mut Map<String, Value>) -> ApiResult<()> {
        if let Some(Value::String(o)) = m.get("owner") {
            let uuid = self.resolve_account("owner", o)?;
            m.insert("owner".into(), Value::String(uuid.to_string()));
        }
        if let Some(Value::Array(acl)) = m.get_mut("acl") {
            self.resolve_list("acl", acl)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Config {
        let mut c = Config::default();
        c.logins.insert("alice".into(), Uuid::from_u128(0xa11ce));
        c
    }

    #[test]
    fn a_login_or_a_uuid_names_an_account() {
        let c = table();
        assert_eq!(c.account("alice"), Some(Uuid::from_u128(0xa11ce)));
        let u = Uuid::from_u128(7);
        assert_eq!(c.account(&u.to_string()), Some(u));
        assert_eq!(c.account("bob"), None);
        assert_eq!(c.login_of(&Uuid::from_u128(0xa11ce)), Some("alice"));
    }

    #[test]
    fn an_unknown_login_is_one_sentence_that_names_it() {
        let e = table().resolve_account("acl", "bob").unwrap_err();
        assert_eq!(
            e.message,
            "acl: \"bob\" is neither an account uuid nor a login this datacenter knows"
        );
        let e = Config::default()
            .resolve_account("owner", "bob")
            .unwrap_err();
        assert!(e.message.contains("it knows none"), "{}", e.message);
    }

    #[test]
    fn owner_and_acl_logins_become_uuids() {
        let mut m = serde_json::json!({"owner": "alice", "acl": ["alice", 3]});
        let Some(m) = m.as_object_mut() else {
            panic!("an object")
        };
        table().resolve_manifest(m).unwrap();
        let a = Uuid::from_u128(0xa11ce).to_string();
        assert_eq!(m["owner"], Value::String(a.clone()));
        assert_eq!(m["acl"], serde_json::json!([a, 3]));
    }
}
