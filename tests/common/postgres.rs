//! A scratch schema of the PostgreSQL that POSTURE_TEST_DATABASE_URL names, per test.

/// A fresh schema per test, so runs and tests cannot collide.
pub fn store_url(test: &str) -> String {
    let base = match std::env::var("POSTURE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("POSTURE_TEST_DATABASE_URL is not set: the PostgreSQL tests need it"),
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let schema = format!("posture_{test}_{}_{nanos}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}posture_schema={schema}")
}

/// Drops the test's schema (the URL's `posture_schema`).
pub async fn drop_schema(url: &str) {
    let pool = sqlx::PgPool::connect(&base_url(url)).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", schema_of(url))).execute(&pool).await.unwrap();
}

/// The URL without its `posture_*` parameters, for a plain connection.
pub fn base_url(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let rest: Vec<&str> = query.split('&').filter(|kv| !kv.starts_with("posture_")).collect();
    if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) }
}

pub fn schema_of(url: &str) -> &str {
    url.split_once('?').unwrap().1.split('&').find_map(|kv| kv.strip_prefix("posture_schema=")).unwrap()
}
