#![no_main]
//! Any text as a baseline report or a targets table: parse, and compare what parses.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(report) = harness::report::json::parse(text) {
        let c = harness::report::compare::compare(&report, "fuzz", &report, 10.0);
        let _ = harness::report::text::render(&harness::report::Report { comparison: Some(c), ..report });
    }
    let _ = harness::targets::Table::parse(text);
});
