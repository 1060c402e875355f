//! What the report.md files of `search` and `transfer` are made of: tables, percentages, and
//! writing report.md beside report.json. One format for both.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::run_dir::{RunError, write_atomic};

/// A markdown table: the header row, the separator, one line per row.
pub fn table<S: AsRef<str>>(header: &[S], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let line = |cells: &[&str]| format!("| {} |\n", cells.join(" | "));
    let header: Vec<&str> = header.iter().map(AsRef::as_ref).collect();
    let mut s = line(&header);
    s += &format!("|{}\n", "---|".repeat(header.len()));
    for row in rows {
        s += &line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    s
}

/// `0.4512` -> `45.1` (percent, one decimal, no sign).
pub fn percent(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// `0.045` -> `+4.5` (percentage points, signed).
pub fn points(x: f64) -> String {
    format!("{:+.1}", 100.0 * x)
}

/// Writes `md` to `dir/report.md` and `report` to `dir/report.json` (pretty), each atomically;
/// returns the two paths.
pub fn write_report_files<T: Serialize>(dir: &Path, md: &str, report: &T) -> Result<Vec<PathBuf>, RunError> {
    let md_path = dir.join("report.md");
    write_atomic(&md_path, md.as_bytes())?;
    let json_path = dir.join("report.json");
    write_atomic(&json_path, serde_json::to_string_pretty(report).expect("report serializes").as_bytes())?;
    Ok(vec![md_path, json_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_numbers_read_as_markdown() {
        let t = table(&["a", "b"], [vec!["1".to_string(), "x y".to_string()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | x y |\n");
        assert_eq!(table(&["only"], Vec::new()), "| only |\n|---|\n");
        assert_eq!((percent(0.4512), percent(1.0)), ("45.1".to_string(), "100.0".to_string()));
        assert_eq!((points(0.045), points(-0.1), points(0.0)), ("+4.5".into(), "-10.0".into(), "+0.0".into()));
    }
}
