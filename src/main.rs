//! The `infer` command line: run, inspect and benchmark models.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Errors are printed as one human line; a panic would be a bug, but it still gets one line
    // and a non-zero exit instead of a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        eprintln!("error: internal error (please report): {msg}");
    }));
    match cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
