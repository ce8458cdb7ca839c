//! The migrations are compiled into the binary (`sqlx::migrate!`), but cargo
//! does not know that: without this, a migration added or edited without a
//! change to Rust code would not reach an incremental build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
