//! Several `gatehouse serve` replicas on one PostgreSQL database, as an operator runs
//! them: one master key and one proxy token for all, started together (they bootstrap
//! the store once), with the URL list a proxy is given to fail over between them.

use base64::Engine as _;
use rand::RngCore;
use reqwest::Method;

use crate::config::random_base62;
use crate::control_plane::{Cli, ControlPlane};
use crate::postgres;

pub struct ReplicaSet {
    cluster: &'static postgres::Cluster,
    /// The replicas, in the order of [`urls`](Self::urls).
    pub planes: Vec<ControlPlane>,
    /// Their one database.
    pub database: String,
    /// The bootstrap admin's credential (written by whichever replica created it).
    admin_credential: String,
}

impl ReplicaSet {
    /// `n` replicas on a new database of this process's PostgreSQL cluster.
    pub async fn start(n: usize) -> anyhow::Result<ReplicaSet> {
        Self::start_on(postgres::cluster()?, n).await
    }

    /// `n` replicas on a new database of `cluster`.
    pub async fn start_on(
        cluster: &'static postgres::Cluster,
        n: usize,
    ) -> anyhow::Result<ReplicaSet> {
        let database = cluster.create_database()?;
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let proxy_token = format!("gpx_test_{}", random_base62(32));
        let started = futures::future::join_all((0..n).map(|_| {
            ControlPlane::start_replica(
                Some(database.clone()),
                Some(key.clone()),
                proxy_token.clone(),
            )
        }))
        .await;
        let planes = started.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let admin_credential = planes
            .iter()
            .map(|cp| cp.admin_credential())
            .find(|c| !c.is_empty())
            .ok_or_else(|| anyhow::anyhow!("no replica wrote admin.credential"))?
            .to_owned();
        Ok(ReplicaSet {
            cluster,
            planes,
            database,
            admin_credential,
        })
    }

    /// `--control-plane` for a proxy: every replica's API URL, comma-separated.
    pub fn urls(&self) -> String {
        self.planes
            .iter()
            .map(ControlPlane::api_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn proxy_token(&self) -> &str {
        self.planes[0].proxy_token()
    }

    /// A CLI logged in as the bootstrap admin at replica `index`.
    pub async fn admin_at(&self, index: usize) -> anyhow::Result<Cli> {
        let cli = Cli::new(&format!("admin-{index}"))?;
        cli.login(
            &self.planes[index].api_url(),
            "admin",
            &self.admin_credential,
        )
        .await?;
        Ok(cli)
    }

    /// The names of the proxies replica `index` lists as connected (its watch
    /// stream is open there), asked with `session`.
    pub async fn connected_at(&self, index: usize, session: &str) -> anyhow::Result<Vec<String>> {
        let answer = self.planes[index]
            .request(Method::GET, "/v1/proxies", Some(session), None)
            .await?;
        anyhow::ensure!(
            answer.status == 200,
            "GET /v1/proxies answered {}: {}",
            answer.status,
            answer.body
        );
        let listed = answer.json()?;
        Ok(listed["proxies"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|p| p["connected"] == true)
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `SELECT` on the database the replicas share, through `psql`.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.cluster
            .psql(postgres::Cluster::database_of(&self.database), sql)
    }
}
