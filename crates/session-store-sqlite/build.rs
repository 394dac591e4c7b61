//! `sqlx::migrate!` embeds `migrations/sqlite/` at compile time; rebuild the
//! crate whenever a migration is added or edited.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations/sqlite");
}
