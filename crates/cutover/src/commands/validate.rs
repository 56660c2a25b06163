//! `cutover validate`: every problem of the stack file, with file:line:column.

use serde_json::json;

use crate::cli::{Cli, OutputFormat};
use crate::exit;
use crate::output;

pub fn run(cli: &Cli) -> anyhow::Result<u8> {
    let opts = cutover_core::spec::LoadOptions {
        environment: cli.environment.clone(),
        profiles: cli.profiles.clone(),
        ..cutover_core::spec::LoadOptions::from_process()
    };
    let result = cutover_core::spec::load(&cli.file, &opts);
    if cli.output == OutputFormat::Json {
        let doc = match &result {
            Ok(l) => json!({
                "valid": true,
                "stack": l.stack.name,
                "services": l.stack.services.len(),
                "data": l.stack.data.len(),
                "diagnostics": [],
                "warnings": l.warnings.to_json(),
                "missing_secrets": l.missing_secrets.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            }),
            Err(d) => json!({ "valid": false, "diagnostics": d.to_json(), "warnings": [] }),
        };
        output::print_json(&doc)?;
        return Ok(if result.is_ok() {
            exit::OK
        } else {
            exit::INVALID
        });
    }
    let loaded = result?;
    if !loaded.warnings.items.is_empty() {
        eprintln!("{}", loaded.warnings);
    }
    let s = &loaded.stack;
    let mut text = format!(
        "{}: stack `{}` is valid: {} service{}, {} data set{}",
        cli.file.display(),
        s.name,
        s.services.len(),
        if s.services.len() == 1 { "" } else { "s" },
        s.data.len(),
        if s.data.len() == 1 { "" } else { "s" },
    );
    if let Some(env) = &s.environment {
        text.push_str(&format!(" (environment {env})"));
    }
    text.push('\n');
    for (name, why) in &loaded.missing_secrets {
        text.push_str(&format!(
            "note: secret `{name}` is not available here ({why}); plan works, apply will refuse\n"
        ));
    }
    output::print(&text)?;
    Ok(exit::OK)
}
