//! The `squint` command-line tool (see `squint --help`), built with the `cli` feature (on by
//! default). The command line, `squint demo` and `squint bench` live here, in the binary; the
//! library (`src/lib.rs`) is the engine only.

mod cli;

fn main() -> std::process::ExitCode {
    ensure_xdg_runtime_dir();
    cli::main()
}

/// Points `XDG_RUNTIME_DIR` at a private 0700 directory when it is unset or invalid, so that
/// Mesa's Vulkan loader does not print "XDG_RUNTIME_DIR is invalid or not set" on every run.
///
/// This lives in the binary, not the library: it changes the process environment, which is
/// only sound before any other thread exists (here, first thing in `main`). A program that
/// uses the library sets the variable itself if it cares about the message.
fn ensure_xdg_runtime_dir() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let valid = |p: &std::path::Path| {
            p.is_absolute()
                && std::fs::metadata(p)
                    .map(|m| m.is_dir() && m.permissions().mode() & 0o777 == 0o700)
                    .unwrap_or(false)
        };
        if let Some(cur) = std::env::var_os("XDG_RUNTIME_DIR") {
            if valid(std::path::Path::new(&cur)) {
                return;
            }
        }
        let base = std::env::temp_dir();
        let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
        for name in [
            format!("squint-xdg-{user}"),
            format!("squint-xdg-{user}-{}", std::process::id()),
        ] {
            let dir = base.join(name);
            let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
            // Usable only if it is ours: private and writable.
            let probe = dir.join(format!(".probe-{}", std::process::id()));
            if valid(&dir) && std::fs::write(&probe, b"").is_ok() {
                let _ = std::fs::remove_file(&probe);
                // SAFETY-relevant: no other thread exists yet (first statement of `main`).
                std::env::set_var("XDG_RUNTIME_DIR", &dir);
                return;
            }
        }
    }
}
