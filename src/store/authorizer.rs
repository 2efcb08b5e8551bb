//! The SQLite authorizer applied to user SQL.
//!
//! Users may do anything to their own tables, but not reach outside the
//! actor's file (ATTACH, VACUUM INTO, extensions), not change durability or
//! file layout (pragmas), not manage transactions (the engine owns them for
//! group commit), and not write the engine's reserved `_roost_*` tables.
//! Engine-issued statements run with the gate open.

use libsql::{AuthAction, AuthContext, Authorization};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Prefix of the tables the engine reserves in every actor database.
pub const RESERVED_PREFIX: &str = "_roost_";

/// Pragmas a user may read or (for `user_version`) set: introspection only.
const READ_PRAGMAS: &[&str] = &[
    "application_id",
    "collation_list",
    "data_version",
    "foreign_key_check",
    "foreign_key_list",
    "freelist_count",
    "function_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "quick_check",
    "schema_version",
    "table_info",
    "table_list",
    "table_xinfo",
    "user_version",
];

/// Pragmas whose argument is a table or check target, not a new setting.
const ARGUMENT_PRAGMAS: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_xinfo",
    "table_list",
];

/// The gate closed for user SQL, until this drops.
pub struct UserScope(UserSqlGate);

impl Drop for UserScope {
    fn drop(&mut self) {
        self.0.set_user(false);
    }
}

/// Whether statements being prepared come from a user (gate closed).
#[derive(Clone, Default)]
pub struct UserSqlGate(Arc<AtomicBool>);

impl UserSqlGate {
    pub fn set_user(&self, user: bool) {
        self.0.store(user, Ordering::Relaxed);
    }

    /// Closes the gate until the returned guard drops, even by a panic
    /// (libSQL panics on some values it reads, and the engine catches
    /// that): a gate left closed would deny the engine's own statements.
    pub fn for_user(&self) -> UserScope {
        self.set_user(true);
        UserScope(self.clone())
    }

    fn is_user(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The authorizer callback for a connection.
    pub fn hook(&self) -> libsql::AuthHook {
        let gate = self.clone();
        Arc::new(move |ctx: &AuthContext| {
            if !gate.is_user() || permitted(&ctx.action) {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        })
    }
}

fn reserved(table: &str) -> bool {
    table.len() >= RESERVED_PREFIX.len()
        && table[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX)
}

/// The policy for user statements.
pub fn permitted(action: &AuthAction<'_>) -> bool {
    use AuthAction as A;
    match action {
        A::Attach { .. } | A::Detach { .. } => false,
        A::Transaction { .. } | A::Savepoint { .. } => false,
        A::Function { function_name } => !function_name.eq_ignore_ascii_case("load_extension"),
        A::Pragma {
            pragma_name,
            pragma_value,
        } => pragma_permitted(pragma_name, *pragma_value),
        A::Insert { table_name }
        | A::Delete { table_name }
        | A::Update { table_name, .. }
        | A::CreateTable { table_name }
        | A::CreateTempTable { table_name }
        | A::DropTable { table_name }
        | A::CreateIndex { table_name, .. }
        | A::DropIndex { table_name, .. }
        | A::CreateTrigger { table_name, .. }
        | A::DropTrigger { table_name, .. }
        | A::AlterTable { table_name, .. }
        | A::CreateVtable { table_name, .. }
        | A::DropVtable { table_name, .. } => !reserved(table_name),
        A::CreateView { view_name } | A::DropView { view_name } => !reserved(view_name),
        A::Unknown { .. } => false,
        _ => true,
    }
}

fn pragma_permitted(name: &str, value: Option<&str>) -> bool {
    let name = name.to_ascii_lowercase();
    if !READ_PRAGMAS.contains(&name.as_str()) {
        return false;
    }
    value.is_none() || name == "user_version" || ARGUMENT_PRAGMAS.contains(&name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsql::AuthAction as A;

    #[test]
    fn dangerous_actions_are_denied() {
        assert!(!permitted(&A::Attach { filename: "/etc/x" }));
        assert!(!permitted(&A::Function {
            function_name: "LOAD_EXTENSION"
        }));
        assert!(!permitted(&A::Pragma {
            pragma_name: "journal_mode",
            pragma_value: Some("off")
        }));
        assert!(!permitted(&A::Pragma {
            pragma_name: "synchronous",
            pragma_value: None
        }));
        assert!(!permitted(&A::Pragma {
            pragma_name: "page_size",
            pragma_value: Some("512")
        }));
        assert!(!permitted(&A::Insert {
            table_name: "_roost_kv"
        }));
        assert!(!permitted(&A::DropTable {
            table_name: "_ROOST_meta"
        }));
    }

    #[test]
    fn ordinary_work_is_allowed() {
        assert!(permitted(&A::Insert { table_name: "t" }));
        assert!(permitted(&A::Function {
            function_name: "randomblob"
        }));
        assert!(permitted(&A::Pragma {
            pragma_name: "table_info",
            pragma_value: Some("t")
        }));
        assert!(permitted(&A::Pragma {
            pragma_name: "user_version",
            pragma_value: Some("3")
        }));
        assert!(permitted(&A::Read {
            table_name: "_roost_kv",
            column_name: "key"
        }));
    }
}
