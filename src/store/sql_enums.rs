//! Domain enums stored as their documented text: written with `as_str`, read with
//! `parse`, and a value the binary does not know is a typed error, not a silent default.
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use super::accounts::ApproverMode;
use crate::domain::{
    AccountState, Custody,
    checkout::CheckoutState,
    drill::DrillState,
    root_task::{AccountType, TaskPolicy},
};

macro_rules! text_enum {
    ($($ty:ty),* $(,)?) => {$(
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$ty>::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} {text:?} in the database", stringify!($ty)).into())
                })
            }
        }
    )*};
}

text_enum!(AccountState, AccountType, ApproverMode, CheckoutState, Custody, DrillState);

impl ToSql for TaskPolicy {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for TaskPolicy {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        TaskPolicy::parse(value.as_str()?).map_err(|e| FromSqlError::Other(e.message.into()))
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    #[test]
    fn states_round_trip_as_their_text_and_unknown_text_is_an_error() {
        let conn = Connection::open_in_memory().unwrap();
        let text: String = conn.query_row("SELECT ?1", [DrillState::Overdue], |r| r.get(0)).unwrap();
        assert_eq!(text, "overdue");
        let back: CheckoutState = conn.query_row("SELECT 'released'", [], |r| r.get(0)).unwrap();
        assert_eq!(back, CheckoutState::Released);
        let bad: rusqlite::Result<AccountState> = conn.query_row("SELECT 'melted'", [], |r| r.get(0));
        assert!(bad.unwrap_err().to_string().contains("unknown AccountState \"melted\""));
    }
}
