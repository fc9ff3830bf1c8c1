//! `gatehouse up` and `gatehouse serve`: turn flags into the server's options and
//! run it on a multi-threaded runtime until Ctrl-C. `gatehouse migrate`: copy a
//! SQLite store into PostgreSQL.

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::args::{MigrateArgs, ServeArgs, UpArgs};
use super::error::CliError;
use crate::server::{self, ServeOptions, UpOptions};
use crate::store::{Database, Engine, Store};

pub fn up(args: UpArgs) -> Result<(), CliError> {
    let data_dir = data_dir(args.data_dir)?;
    let serve = ServeOptions {
        database: database(args.database.as_deref(), &data_dir)?,
        data_dir,
        listen: args.api_listen,
        gateway_url: args
            .gateway_url
            .map(|url| url.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| gateway_url_for(args.listen)),
        call_retention_days: args.retention.call_retention_days,
        ask_servers: args.ask_servers,
        runner: args.runner.settings(),
        proxy_limits: gatehouse_config::Limits::default(),
    };
    let options = UpOptions {
        serve,
        proxy_listen: args.listen,
        proxy_admin_listen: args.admin_listen,
        demo: args.demo,
    };
    block_on(server::up(options))
}

pub fn serve(args: ServeArgs) -> Result<(), CliError> {
    let data_dir = data_dir(args.data_dir)?;
    let options = ServeOptions {
        database: database(args.database.as_deref(), &data_dir)?,
        data_dir,
        listen: args.listen,
        gateway_url: args.gateway_url.trim_end_matches('/').to_owned(),
        call_retention_days: args.retention.call_retention_days,
        ask_servers: args.ask_servers,
        runner: args.runner.settings(),
        proxy_limits: args.proxy_limits.limits(args.proxy_share),
    };
    block_on(server::serve(options))
}

fn database(url: Option<&str>, data_dir: &Path) -> Result<Database, CliError> {
    Database::from_url(url, data_dir).map_err(|err| CliError::usage(err.to_string()))
}

/// `gatehouse migrate --from PATH --to URL`.
pub fn migrate(args: MigrateArgs) -> Result<(), CliError> {
    let file = if args.from.is_dir() {
        args.from.join("gatehouse.db")
    } else {
        args.from.clone()
    };
    if !file.is_file() {
        return Err(CliError::usage(format!(
            "no SQLite store at {}: --from takes a data directory (with gatehouse.db) or the file",
            args.from.display()
        )));
    }
    let from = Database::SqliteUrl(format!("sqlite://{}?mode=rw", file.display()));
    let to = database(Some(&args.to), &file)?;
    if to.engine() != Engine::Postgres {
        return Err(CliError::usage(format!(
            "--to must be a PostgreSQL URL (postgres://...), not {to}"
        )));
    }
    block_on(async move {
        let source = Store::connect(&from).await?;
        let target = Store::connect(&to).await?;
        let copied = source.copy_into(&target).await?;
        let rows: Vec<String> = copied
            .tables
            .iter()
            .map(|(table, n)| format!("{table} {n}"))
            .collect();
        println!(
            "Copied {} into {to} (config version {}): {}.",
            file.display(),
            copied.config_version,
            rows.join(", ")
        );
        println!(
            "Start the control plane with --database and the master key of the old store \
             (master.key next to gatehouse.db, or GATEHOUSE_MASTER_KEY)."
        );
        Ok(())
    })
}

fn data_dir(flag: Option<PathBuf>) -> Result<PathBuf, CliError> {
    flag.or_else(|| dirs::data_dir().map(|dir| dir.join("gatehouse")))
        .ok_or_else(|| {
            CliError::usage("cannot find a data directory for this user: pass --data-dir DIR")
        })
}

/// The URL clients use to reach a proxy listening on `listen`. A wildcard bind
/// address is not somewhere a client can connect to, so loopback stands in.
pub fn gateway_url_for(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

fn block_on(task: impl std::future::Future<Output = anyhow::Result<()>>) -> Result<(), CliError> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Local(anyhow::anyhow!("cannot start the async runtime: {err}")))?;
    runtime.block_on(task).map_err(CliError::Local)
}

/// Logs to stderr, `RUST_LOG` or `info`. `try_init` so the server may install its
/// own subscriber first without a panic.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_url_uses_the_proxy_listen_address() {
        assert_eq!(
            gateway_url_for("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            gateway_url_for("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            gateway_url_for("[::]:81".parse().unwrap()),
            "http://[::1]:81"
        );
        assert_eq!(
            gateway_url_for("10.0.0.5:80".parse().unwrap()),
            "http://10.0.0.5:80"
        );
    }
}
