//! What one control plane at a time does among those sharing a PostgreSQL database:
//! creating what a first start creates, pruning old calls. A [`Lease`] is a session
//! advisory lock, held on one pooled connection until [`Held::release`] (or until the
//! process ends: a connection holding one is closed, never returned to the pool, if
//! the holder drops it without releasing). On SQLite, which one control plane uses,
//! every lease is granted at once.

use sqlx::pool::PoolConnection;
use sqlx::{Any, Row};

use super::{Engine, Store};

/// The things only one control plane at a time may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Starting: the bootstrap admin, keys and the Hub catalog are created once.
    Start,
    /// Deleting calls older than the retention.
    PruneCalls,
}

impl Lease {
    /// The advisory lock key: fixed numbers, so every version of Gatehouse agrees.
    fn key(self) -> i64 {
        match self {
            Lease::Start => 7_406_150_532,
            Lease::PruneCalls => 7_406_150_533,
        }
    }
}

/// A lease this control plane holds (see [`Store::hold`]).
pub struct Held {
    lease: Lease,
    conn: Option<PoolConnection<Any>>,
}

impl Store {
    /// Waits until `lease` is free, then holds it.
    pub async fn hold(&self, lease: Lease) -> Result<Held, sqlx::Error> {
        let Some(mut conn) = self.lease_connection().await? else {
            return Ok(Held { lease, conn: None });
        };
        // The lock function returns `void`, which the `Any` driver cannot decode:
        // count the one row instead.
        sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_lock($1)) AS held")
            .bind(lease.key())
            .execute(&mut *conn)
            .await?;
        Ok(Held {
            lease,
            conn: Some(conn),
        })
    }

    /// Holds `lease` if no other control plane does; `None` if one does.
    pub async fn try_hold(&self, lease: Lease) -> Result<Option<Held>, sqlx::Error> {
        let Some(mut conn) = self.lease_connection().await? else {
            return Ok(Some(Held { lease, conn: None }));
        };
        let got: bool = sqlx::query("SELECT pg_try_advisory_lock($1) AS got")
            .bind(lease.key())
            .fetch_one(&mut *conn)
            .await?
            .try_get("got")?;
        Ok(got.then_some(Held {
            lease,
            conn: Some(conn),
        }))
    }

    /// A connection of its own for a session lock (PostgreSQL), closed rather than
    /// pooled again if the lock is not released.
    async fn lease_connection(&self) -> Result<Option<PoolConnection<Any>>, sqlx::Error> {
        if self.engine != Engine::Postgres {
            return Ok(None);
        }
        let mut conn = self.pool.acquire().await?;
        conn.close_on_drop();
        Ok(Some(conn))
    }
}

impl Held {
    /// Lets the next control plane take the lease.
    pub async fn release(self) -> Result<(), sqlx::Error> {
        if let Some(mut conn) = self.conn {
            sqlx::query("SELECT pg_advisory_unlock($1) AS released")
                .bind(self.lease.key())
                .execute(&mut *conn)
                .await?;
            // Dropped, the connection closes (see `lease_connection`); the pool opens
            // another when it needs one. Leases are taken at start and hourly.
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{self, on_both_engines};

    on_both_engines! {
    /// Two stores on one database (two control planes): one holds a lease at a time.
    async fn one_store_at_a_time_holds_a_lease(engine: Engine) {
        let (_dir, one) = testing::fresh(engine).await;
        let other = testing::same_database(&one).await;
        let held = one.try_hold(Lease::PruneCalls).await.unwrap().expect("free");
        let second = other.try_hold(Lease::PruneCalls).await.unwrap();
        match engine {
            Engine::Postgres => assert!(second.is_none(), "held twice at once"),
            // One control plane per SQLite file: nothing to exclude.
            Engine::Sqlite => assert!(second.is_some()),
        }
        // Another lease is independent of it.
        let start = other.try_hold(Lease::Start).await.unwrap().expect("free");
        start.release().await.unwrap();
        held.release().await.unwrap();
        let again = other.try_hold(Lease::PruneCalls).await.unwrap();
        again.expect("free again once released").release().await.unwrap();
    }
    }
}
