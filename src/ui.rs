//! The dev stack's UI bundle (ui/dist), built with npm when it is missing or stale.

use crate::procs::find_binary;
use std::path::Path;
use std::time::SystemTime;

/// What the bundle is built from (ui/node_modules and ui/dist are not).
const SOURCES: &[&str] = &["src", "index.html", "explorer.html", "package-lock.json", "vite.config.ts", "scripts"];

/// Builds the UI into ui/dist when it is missing or older than its sources and npm is there;
/// the API works without it.
pub fn build() {
    let built = modified(Path::new("ui/dist/index.html"));
    if built.is_some() && built >= newest(Path::new("ui")) {
        return;
    }
    if !Path::new("ui/package.json").is_file() || find_binary("npm", "").is_err() {
        println!("ui/dist is missing or stale and npm is not available: the API works, the UI will not load (install Node.js and run `npm ci && npm run build` in ui/)");
        return;
    }
    let npm = |args: &[&str]| std::process::Command::new("npm").args(args).current_dir("ui").status().map(|s| s.success()).unwrap_or(false);
    println!("building the UI (npm run build in ui/)...");
    if !Path::new("ui/node_modules").is_dir() && !npm(&["ci", "--no-audit", "--no-fund"]) {
        println!("npm ci failed in ui/: the UI will not load");
        return;
    }
    if !npm(&["run", "build"]) {
        println!("npm run build failed in ui/: the UI will not load");
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the UI's sources under `ui`.
fn newest(ui: &Path) -> Option<SystemTime> {
    fn walk(path: &Path, newest: &mut Option<SystemTime>) {
        *newest = (*newest).max(modified(path));
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                walk(&entry.path(), newest);
            }
        }
    }
    let mut newest = None;
    for source in SOURCES {
        walk(&ui.join(source), &mut newest);
    }
    newest
}
