//! What meetingd makes of the marketplace's own columns: their types and nullability, as
//! `meetingd check` reports them.
//!
//! meetingd reads these columns in its claim and never controls them. The claim copes with
//! NULLs and with the odd types below (see `jobs::claim`); this module only tells an operator,
//! before the first booking, what will happen with each oddity. It must not change anything.

use super::{DbError, Sql};

/// One column meetingd reads, and what its type and nullability mean for the bookings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnReport {
    /// `table.column`.
    pub column: String,
    /// `false`: meetingd cannot work with it (missing, or a type it cannot read).
    pub ok: bool,
    /// The type as PostgreSQL names it, and what meetingd does with it.
    pub detail: String,
}

/// The columns the claim reads, with the type class each must have.
const COLUMNS: [(&str, &str, Kind); 17] = [
    ("users", "id", Kind::Id),
    ("users", "email", Kind::Text("an invitation goes without the customer's address")),
    ("users", "full_name", Kind::Text("the title says \"customer\" / \"provider\" instead")),
    ("services", "id", Kind::Id),
    ("services", "provider_id", Kind::Id),
    ("services", "title", Kind::Text("a booking's meeting is titled \"Online meeting\"")),
    ("services", "description", Kind::Text("the meeting has no description")),
    ("services", "is_online", Kind::Bool),
    ("services", "meeting_platform", Kind::Text("the fallback platform is used")),
    ("services", "meeting_settings", Kind::Json),
    ("bookings", "id", Kind::Id),
    ("bookings", "service_id", Kind::Id),
    ("bookings", "customer_id", Kind::Id),
    ("bookings", "start_time", Kind::Time),
    ("bookings", "end_time", Kind::Time),
    ("bookings", "status", Kind::Text("the booking gets no meeting")),
    ("bookings", "meeting_link", Kind::Text("")),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Id,
    Bool,
    Time,
    Json,
    /// What a NULL means.
    Text(&'static str),
}

/// Inspects every column meetingd reads.
pub async fn inspect(db: Sql<'_>) -> Result<Vec<ColumnReport>, DbError> {
    let (tables, names): (Vec<&str>, Vec<&str>) = COLUMNS.iter().map(|(t, c, _)| (*t, *c)).unzip();
    let rows = db
        .query(
            "SELECT w.n, t.typname, format_type(a.atttypid, a.atttypmod), a.attnotnull, t.typtype::text
               FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(tbl, col, n)
               LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(w.tbl) AND a.attname = w.col AND NOT a.attisdropped
               LEFT JOIN pg_type t ON t.oid = a.atttypid
              ORDER BY w.n",
            &[&tables, &names],
        )
        .await?;
    Ok(rows
        .iter()
        .zip(COLUMNS)
        .map(|(r, (table, column, kind))| {
            let column = format!("{table}.{column}");
            let found: Option<(String, String, bool, String)> =
                r.get::<_, Option<String>>(1).map(|t| (t, r.get(2), r.get(3), r.get(4)));
            match found {
                None => ColumnReport { column, ok: false, detail: "missing: meetingd reads this column".into() },
                Some((typname, shown, not_null, typtype)) => {
                    let (ok, detail) = judge(kind, &typname, &typtype, not_null);
                    ColumnReport {
                        column,
                        ok,
                        detail: format!("{shown}{}: {detail}", if not_null { " NOT NULL" } else { "" }),
                    }
                }
            }
        })
        .collect())
}

/// Whether a column of this type works, and what meetingd does with it.
fn judge(kind: Kind, typname: &str, typtype: &str, not_null: bool) -> (bool, String) {
    let nullable = |what: &str| if not_null || what.is_empty() { String::new() } else { format!("; NULL: {what}") };
    match kind {
        Kind::Id if typname == "uuid" => (true, format!("as expected{}", nullable("treated as missing"))),
        Kind::Id => (false, "meetingd expects uuid ids".into()),
        Kind::Bool if typname == "bool" => (true, format!("as expected{}", nullable("counts as in-person"))),
        Kind::Bool => (false, "meetingd expects a boolean".into()),
        Kind::Time => match typname {
            "timestamptz" => (true, format!("as expected{}", nullable("the booking fails with a sentence"))),
            "timestamp" => {
                (true, format!("read as UTC (no time zone stored){}", nullable("the booking fails with a sentence")))
            }
            _ => (false, "not a timestamp: every booking fails with \"cannot be read as a time\"".into()),
        },
        Kind::Json => match typname {
            "jsonb" | "json" => (true, "as expected".into()),
            _ => (true, "read as text and parsed as JSON; invalid JSON fails the booking with a sentence".into()),
        },
        Kind::Text(null) => {
            let how = match (typname, typtype) {
                ("text" | "varchar" | "bpchar" | "citext", _) => "as expected".to_string(),
                (_, "e") => "an enum, read as its text".to_string(),
                _ => "read as text".to_string(),
            };
            (true, format!("{how}{}", nullable(null)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_types_are_explained_and_unreadable_ones_fail() {
        assert_eq!(judge(Kind::Time, "timestamptz", "b", true), (true, "as expected".into()));
        let (ok, naive) = judge(Kind::Time, "timestamp", "b", false);
        assert!(ok && naive.contains("UTC") && naive.contains("fails with a sentence"), "{naive}");
        assert!(!judge(Kind::Time, "text", "b", true).0);
        assert!(!judge(Kind::Id, "int8", "b", true).0);
        let (ok, title) = judge(Kind::Text("a booking's meeting is titled \"Online meeting\""), "varchar", "b", false);
        assert!(ok && title.contains("Online meeting"), "{title}");
        assert!(judge(Kind::Text("x"), "booking_state", "e", true).1.contains("enum"));
    }
}
