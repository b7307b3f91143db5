//! No code: see Cargo.toml and update.py (every build of the workspace uses the same dependency features).
