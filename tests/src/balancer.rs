//! nginx (Debian's `nginx-light`) as the load balancer in front of several proxies,
//! the way `deploy/nginx/nginx.conf` runs it: round robin, a connection refused by one
//! proxy tried on the next, responses and event streams unbuffered. One process
//! (`master_process off`) on a free loopback port, with its config, temp files and
//! error log in a temporary directory; killed on drop.
//!
//! nginx is a hard prerequisite (`scripts/prereqs.sh --tests` installs it): without
//! it [`Balancer::start`] fails, naming that command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::control_plane::free_addr;
use crate::{wait_until, TempDir, STEP_TIMEOUT};

pub struct Balancer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: TempDir,
}

fn nginx_binary() -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from("/usr/sbin/nginx"),
        PathBuf::from("/usr/bin/nginx"),
    ];
    candidates.into_iter().find(|p| p.exists()).ok_or_else(|| {
        anyhow::anyhow!("nginx is not installed: run scripts/prereqs.sh --tests (nginx-light)")
    })
}

impl Balancer {
    /// Balances HTTP on a free loopback port over `backends`, and waits until it
    /// accepts connections.
    pub async fn start(backends: &[SocketAddr]) -> anyhow::Result<Balancer> {
        let bin = nginx_binary()?;
        let dir = TempDir::new("nginx")?;
        // As root, nginx serves as `nobody`, who must be able to write its temp files.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        }
        let addr = free_addr()?;
        let d = dir.path().display();
        let servers: String = backends
            .iter()
            .map(|b| format!("        server {b} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let config = format!(
            "daemon off;\nmaster_process off;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n\
             \x20   client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
             \x20   upstream proxies {{\n{servers}        keepalive 32;\n    }}\n\
             \x20   server {{\n        listen {addr};\n        proxy_http_version 1.1;\n\
             \x20       proxy_set_header Connection \"\";\n        proxy_set_header Host $http_host;\n\
             \x20       proxy_buffering off;\n        proxy_request_buffering off;\n\
             \x20       proxy_read_timeout 60s;\n        proxy_connect_timeout 1s;\n\
             \x20       location / {{ proxy_pass http://proxies; }}\n    }}\n}}\n"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config)?;
        let child = Command::new(&bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bin.display()))?;
        let mut balancer = Balancer {
            child: Some(child),
            addr,
            dir,
        };
        let ready = wait_until("nginx accepts connections", STEP_TIMEOUT, || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        if let Err(e) = ready {
            anyhow::bail!("{e}\n--- nginx error log:\n{}", balancer.log());
        }
        if let Some(child) = balancer.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("nginx exited: {status}\n{}", balancer.log());
            }
        }
        Ok(balancer)
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// nginx's error log (warnings and up: failed upstreams among them).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "--- nginx on {} error log, last lines:\n{}",
            self.addr,
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
}
