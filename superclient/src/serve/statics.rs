//! Static files (`bus:serve_static`): a GET or HEAD that no route matched is answered from the
//! first tree whose prefix it starts with, unless it falls under one of the tree's `exclude`
//! prefixes. A path that names no file gets the tree's `fallback` file (a single-page app's
//! `index.html`) with 200. Paths never leave the tree (`..` and encoded separators are refused).

use crate::script::StaticSpec;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::path::{Path, PathBuf};

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("ttf") => "font/ttf",
        Some("txt") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// The file under `dir` that `rel` (a URL path below the prefix) names, if it is a safe path.
fn resolve(dir: &Path, rel: &str) -> Option<PathBuf> {
    let mut path = dir.to_path_buf();
    for raw in rel.split('/').filter(|s| !s.is_empty()) {
        let seg = super::answers::percent_decode(raw);
        if seg == "." || seg == ".." || seg.contains('/') || seg.contains('\\') || seg.contains('\0') {
            return None;
        }
        path.push(seg);
    }
    Some(path)
}

async fn file_response(path: &Path, head: bool) -> Option<Response> {
    let path = if path.is_dir() { path.join("index.html") } else { path.to_path_buf() };
    let bytes = tokio::fs::read(&path).await.ok()?;
    let immutable = path.components().any(|c| c.as_os_str() == "assets");
    let cache = if immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut response = if head { StatusCode::OK.into_response() } else { (StatusCode::OK, bytes.clone()).into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if head {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    Some(response)
}

/// Answers `path` from the first matching tree, or None (the caller answers 404).
pub async fn serve(trees: &[StaticSpec], path: &str, head: bool) -> Option<Response> {
    for tree in trees {
        let Some(rel) = path.strip_prefix(tree.prefix.trim_end_matches('/')) else { continue };
        if !(rel.is_empty() || rel.starts_with('/')) {
            continue;
        }
        if tree.exclude.iter().any(|x| path == x.trim_end_matches('/') || path.starts_with(x.as_str())) {
            continue;
        }
        if let Some(file) = resolve(&tree.dir, rel) {
            if let Some(r) = file_response(&file, head).await {
                return Some(r);
            }
        }
        if let Some(fallback) = &tree.fallback {
            if let Some(r) = file_response(&tree.dir.join(fallback), head).await {
                return Some(r);
            }
            return Some(super::answers::json_error(
                StatusCode::NOT_FOUND,
                format!("{} has no {fallback}: is the UI built? (cd ui && npm run build)", tree.dir.display()),
            ));
        }
    }
    None
}
