//! Stores for unit tests, on either engine: a fresh SQLite file in a temporary
//! directory, or a fresh database in the test process's throwaway PostgreSQL cluster
//! (`gatehouse_tests::postgres`, which fails the test when PostgreSQL is missing).

use super::{Database, Engine, Store};

/// A new, empty, migrated store on `engine`, and what must live as long as it.
pub async fn fresh(engine: Engine) -> (Option<tempfile::TempDir>, Store) {
    match engine {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).await.unwrap();
            (Some(dir), store)
        }
        Engine::Postgres => {
            let url = tokio::task::spawn_blocking(|| {
                gatehouse_tests::postgres::cluster()?.create_database()
            })
            .await
            .unwrap()
            .unwrap();
            (
                None,
                Store::connect(&Database::Postgres(url)).await.unwrap(),
            )
        }
    }
}

/// A second store on `store`'s database, as another control plane would open it.
pub async fn same_database(store: &Store) -> Store {
    Store::connect(&store.database).await.unwrap()
}

/// Turns `async fn name(engine: Engine) { .. }` into the module `name` with two
/// tests, `name::sqlite` and `name::postgres`, running the body on each engine.
macro_rules! on_both_engines {
    ($(#[doc = $doc:literal])* async fn $name:ident($engine:ident: Engine) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            use super::*;

            async fn run($engine: Engine) $body

            #[tokio::test]
            async fn sqlite() {
                run(Engine::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                run(Engine::Postgres).await
            }
        }
    };
}

pub(crate) use on_both_engines;
