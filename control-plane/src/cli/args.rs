//! The command line grammar (PRODUCT.md's, mirroring the seeds) and the value
//! parsers that reject bad input before anything is sent.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use gatehouse_config::naming::{is_valid_slug, slugify};
use gatehouse_config::Limits;

use crate::dates::{parse_duration, parse_since, Since};
use crate::outbound::AskServers;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Gatehouse, the self-hosted MCP gateway: run it, and manage its workspaces, tokens, MCP servers, secrets, skills and team",
    propagate_version = true
)]
pub struct Cli {
    /// Control plane API URL [default: the one stored at login, else http://127.0.0.1:7070]
    #[arg(long, global = true, env = "GATEHOUSE_API", value_name = "URL")]
    pub api: Option<String>,

    /// Print the API's JSON answer instead of text
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane and one proxy on this machine, logged in as the admin
    Up(UpArgs),
    /// Run the control plane alone (proxies connect to it)
    Serve(ServeArgs),
    /// Copy a SQLite store into a new PostgreSQL database
    Migrate(MigrateArgs),
    /// Log in to a control plane
    Login(LoginArgs),
    /// Forget the stored credential
    Logout,
    /// Show who the stored credential belongs to
    Whoami,
    /// Manage users (admins only)
    #[command(subcommand)]
    User(UserCommand),
    /// Manage workspaces, their tokens and their audit log
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage the MCP servers of a workspace
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Manage the secrets of a workspace's MCP servers
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// List the proxies connected to the control plane
    Proxies,
    /// Publish, find and install skills and MCP server packages (@owner/name)
    #[command(subcommand)]
    Skill(SkillCommand),
    /// Invite people to your team (@you), who may then install your team packages
    #[command(subcommand)]
    Team(TeamCommand),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Also create a `demo` workspace with a built-in demo MCP server
    #[arg(long)]
    pub demo: bool,
    /// Where the store, master key and proxy state live [default: <XDG data dir>/gatehouse]
    #[arg(long, env = "GATEHOUSE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store: a PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE),
    /// which several control planes may share [default: gatehouse.db in the data dir]
    #[arg(
        long,
        env = "GATEHOUSE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// Admin API listen address
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub api_listen: SocketAddr,
    /// Proxy listen address for MCP clients
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Proxy admin listen address (/metrics, /healthz)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Gateway base URL printed in workspace URLs [default: http://<--listen>]
    #[arg(long, value_name = "URL")]
    pub gateway_url: Option<String>,
    /// Which MCP servers the control plane connects to itself (the install probe,
    /// the dashboard's Tools page): any; public (no loopback, private, link-local or
    /// cloud-metadata address); never
    #[arg(
        long,
        env = "GATEHOUSE_ASK_SERVERS",
        value_enum,
        value_name = "WHICH",
        default_value = "any"
    )]
    pub ask_servers: AskServers,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the store and master key live [default: <XDG data dir>/gatehouse]
    #[arg(long, env = "GATEHOUSE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store: a PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE),
    /// which several control planes may share [default: gatehouse.db in the data dir]
    #[arg(
        long,
        env = "GATEHOUSE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// Admin API listen address
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Gateway base URL clients use (printed in workspace URLs)
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub gateway_url: String,
    /// Which MCP servers the control plane connects to itself (the install probe,
    /// the dashboard's Tools page): any; public (no loopback, private, link-local or
    /// cloud-metadata address); never
    #[arg(
        long,
        env = "GATEHOUSE_ASK_SERVERS",
        value_enum,
        value_name = "WHICH",
        default_value = "any"
    )]
    pub ask_servers: AskServers,
    /// How many proxies share every rate budget and stream cap: each proxy enforces
    /// this share of a budget, so that behind a balancer that spreads requests evenly
    /// the fleet together keeps it. Give every control plane of a store the same
    #[arg(
        long,
        env = "GATEHOUSE_PROXY_SHARE",
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub proxy_share: u32,
    #[command(flatten)]
    pub proxy_limits: ProxyLimitArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

/// What every proxy enforces of its own, pushed to them with the config.
#[derive(Debug, Args)]
pub struct ProxyLimitArgs {
    /// Client connections one proxy holds open at once (idle ones and streams
    /// included); one more is answered 503 and closed
    #[arg(
        long,
        env = "GATEHOUSE_PROXY_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = Limits::default().max_connections,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub proxy_max_connections: u32,
    /// How long a proxy waits for a client's whole request head, waiting included
    /// (slowloris), in milliseconds
    #[arg(
        long,
        env = "GATEHOUSE_PROXY_REQUEST_HEAD_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = Limits::default().request_head_timeout_ms,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub proxy_request_head_timeout_ms: u64,
    /// How long one write of an answer waits for a client that does not read it, in
    /// milliseconds
    #[arg(
        long,
        env = "GATEHOUSE_PROXY_SLOW_READ_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = Limits::default().slow_read_timeout_ms,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub proxy_slow_read_timeout_ms: u64,
    /// How long a client event stream (GET, legacy SSE, subscriptions/listen) stays
    /// open before the proxy ends it cleanly, in seconds
    #[arg(
        long,
        env = "GATEHOUSE_PROXY_MAX_STREAM_SECONDS",
        value_name = "S",
        default_value_t = Limits::default().max_stream_seconds,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub proxy_max_stream_seconds: u64,
}

impl ProxyLimitArgs {
    /// The proxies' limits, each proxy taking `proxy_share` of every budget.
    pub fn limits(&self, proxy_share: u32) -> Limits {
        Limits {
            proxy_share,
            max_connections: self.proxy_max_connections,
            request_head_timeout_ms: self.proxy_request_head_timeout_ms,
            slow_read_timeout_ms: self.proxy_slow_read_timeout_ms,
            max_stream_seconds: self.proxy_max_stream_seconds,
            ..Limits::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The SQLite store to copy: a data directory (its gatehouse.db) or the file
    #[arg(long, value_name = "PATH")]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into; it must hold no users or workspaces yet
    #[arg(
        long,
        env = "GATEHOUSE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub to: String,
}

/// What the control plane keeps, and for how long (`up` and `serve`).
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Days a routed call stays in the audit log and analytics; older ones are deleted
    /// at start and hourly (0 = keep every call)
    #[arg(
        long,
        env = "GATEHOUSE_CALL_RETENTION_DAYS",
        value_name = "DAYS",
        default_value_t = crate::calls::retention::DEFAULT_CALL_RETENTION_DAYS
    )]
    pub call_retention_days: u32,
}

/// The runner of hosted stdio MCP servers (`up` and `serve`).
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// Where the runner of hosted stdio servers listens (proxies call it there)
    #[arg(
        long,
        env = "GATEHOUSE_RUNNER_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:0"
    )]
    pub runner_listen: SocketAddr,
    /// The runner's URL as proxies reach it [default: http://<the address it bound>]
    #[arg(long, env = "GATEHOUSE_RUNNER_URL", value_name = "URL")]
    pub runner_url: Option<String>,
    /// Seconds a hosted server may take to answer initialize (npx may download it first)
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub runner_start_timeout: u64,
    /// Stop a hosted server's process after this many seconds without calls (0 = never)
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub runner_idle_stop: u64,
}

impl RunnerArgs {
    pub fn settings(&self) -> crate::server::RunnerSettings {
        crate::server::RunnerSettings {
            listen: self.runner_listen,
            url: self.runner_url.clone(),
            start_timeout: std::time::Duration::from_secs(self.runner_start_timeout.max(1)),
            idle_stop: (self.runner_idle_stop > 0)
                .then(|| std::time::Duration::from_secs(self.runner_idle_stop)),
        }
    }
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username (prompted for when missing)
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Credential (prompted for without echo when missing)
    #[arg(long, env = "GATEHOUSE_CREDENTIAL", hide_env_values = true)]
    pub credential: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print their one-time credential
    Create {
        /// Username, which is also their namespace (@NAME)
        name: String,
        #[arg(long)]
        email: String,
        /// Make the user an administrator
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace and its first token
    Create {
        /// Display name, e.g. "Engineering"
        name: String,
        /// Slug used in the gateway URL [default: derived from the name]
        #[arg(long, value_parser = parse_slug)]
        slug: Option<String>,
    },
    /// List your workspaces (* marks the active one)
    List,
    /// Make a workspace the default for the other commands
    Use {
        #[arg(value_parser = parse_slug)]
        slug: String,
    },
    /// Delete a workspace: revokes its tokens, removes its servers and secrets
    Delete {
        #[arg(value_parser = parse_slug)]
        slug: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Manage a workspace's tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show or set a workspace's rate limits: the whole workspace, each token, open
    /// streams per token (no flags: show them)
    Limits {
        /// Workspace [default: the active one]
        #[arg(value_parser = parse_slug)]
        workspace: Option<String>,
        #[command(flatten)]
        workspace_rate: RateFlags,
        /// Requests per second each token may make (unless it has its own)
        #[arg(long, value_name = "N")]
        token_rps: Option<f64>,
        /// Requests each token may make at once on top of --token-rps
        #[arg(long, value_name = "N")]
        token_burst: Option<u32>,
        /// tools/call requests per minute each token may make
        #[arg(long, value_name = "N")]
        token_calls_per_minute: Option<u32>,
        /// New sessions (initialize) per minute each token may open
        #[arg(long, value_name = "N")]
        token_sessions_per_minute: Option<u32>,
        /// Event streams (GET, SSE, subscriptions/listen) one token may hold open
        #[arg(long, value_name = "N")]
        streams_per_token: Option<u32>,
        /// Remove every limit of the workspace
        #[arg(long, conflicts_with_all = ["rps", "burst", "calls_per_minute", "sessions_per_minute", "token_rps", "token_burst", "token_calls_per_minute", "token_sessions_per_minute", "streams_per_token"])]
        clear: bool,
    },
    /// Show a workspace's audit log: admin changes and the MCP calls routed through it
    Audit {
        /// Workspace [default: the active one]
        #[arg(value_parser = parse_slug)]
        workspace: Option<String>,
        /// Only events newer than this: a duration (30m, 1h, 7d) or a date (2026-03-07)
        #[arg(long, value_parser = parse_since)]
        since: Option<Since>,
        /// Only events by this actor (user or token name)
        #[arg(long)]
        user: Option<String>,
        /// Only this action (install, remove, token_create, token_revoke, tool_call, ...)
        #[arg(long)]
        action: Option<String>,
        /// Continue after the last page (the cursor its last line names)
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
    },
    /// Show what a workspace's calls add up to: calls, errors, p50/p95 latency per
    /// server, per tool and per token
    Analytics {
        /// Workspace [default: the active one]
        #[arg(value_parser = parse_slug)]
        workspace: Option<String>,
        /// Only calls newer than this: a duration (30m, 1h, 7d) or a date (2026-03-07)
        #[arg(long, value_parser = parse_since, default_value = "24h")]
        since: Since,
    },
}

/// A rate budget's flags.
#[derive(Debug, Args, Default, Clone, PartialEq)]
pub struct RateFlags {
    /// Requests per second
    #[arg(long, value_name = "N")]
    pub rps: Option<f64>,
    /// Requests at once on top of --rps [default: one second's worth]
    #[arg(long, value_name = "N")]
    pub burst: Option<u32>,
    /// tools/call requests per minute
    #[arg(long, value_name = "N")]
    pub calls_per_minute: Option<u32>,
    /// New sessions (initialize) per minute
    #[arg(long, value_name = "N")]
    pub sessions_per_minute: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once with a ready-to-paste MCP config
    Create {
        /// Workspace [default: the active one]
        #[arg(value_parser = parse_slug)]
        workspace: Option<String>,
        /// Who or what the token is for, e.g. "Alice Cursor"
        #[arg(long)]
        name: String,
        /// Lifetime in seconds, or with a unit (90m, 12h, 30d) [default: never expires]
        #[arg(long, value_name = "SECONDS", value_parser = parse_lifetime)]
        expires_in: Option<u64>,
        /// Limit the token to the tools matching this glob over exposed names, e.g.
        /// 'github__list_*' (repeatable) [default: every tool of the workspace]
        #[arg(long = "tools", value_name = "GLOB")]
        tools: Vec<String>,
        /// Limit the token to tools annotated read-only
        #[arg(long)]
        read_only: bool,
    },
    /// List a workspace's tokens
    List {
        /// Workspace [default: the active one]
        #[arg(value_parser = parse_slug)]
        workspace: Option<String>,
    },
    /// Revoke a token by name or id; every proxy rejects it immediately
    #[command(group(ArgGroup::new("which").required(true).args(["name", "id"])))]
    Revoke {
        /// Workspace [default: the active one]
        #[arg(value_parser = parse_slug)]
        workspace: Option<String>,
        /// The token's name, e.g. "Alice Cursor"
        #[arg(long)]
        name: Option<String>,
        /// The token's id (see --json output), when several share a name
        #[arg(long)]
        id: Option<String>,
    },
    /// Show or set one token's own rate limits, which replace the workspace's
    /// per-token limits field by field (no flags: show them)
    #[command(group(ArgGroup::new("which").required(true).args(["name", "id"])))]
    Limits {
        /// Workspace [default: the active one]
        #[arg(value_parser = parse_slug)]
        workspace: Option<String>,
        /// The token's name
        #[arg(long)]
        name: Option<String>,
        /// The token's id, when several share a name
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        rate: RateFlags,
        /// Give the token the workspace's per-token limits again
        #[arg(long, conflicts_with_all = ["rps", "burst", "calls_per_minute"])]
        clear: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    StreamableHttp,
    Sse,
}

/// How a server's names reach clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Naming {
    /// <server>__<tool>: many servers side by side
    Prefixed,
    /// The server's own names: at most one server of a workspace
    Bare,
}

impl Naming {
    /// The API's spelling.
    pub fn api_name(self) -> &'static str {
        match self {
            Naming::Prefixed => "prefixed",
            Naming::Bare => "bare",
        }
    }
}

impl Transport {
    /// The API's spelling.
    pub fn api_name(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamable_http",
            Transport::Sse => "sse",
        }
    }
}

/// `--workspace WS`, defaulting to the active workspace.
#[derive(Debug, Args)]
pub struct WorkspaceFlag {
    /// Workspace [default: the active one]
    #[arg(long, short = 'w', value_name = "WS", value_parser = parse_slug)]
    pub workspace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Install an MCP server into a workspace by URL, a Hub package (@owner/name), or
    /// a stdio server Gatehouse runs itself (--command)
    // `--version` is the package's here, not the CLI's.
    #[command(disable_version_flag = true)]
    Install {
        /// The server's Streamable HTTP or SSE URL, or a Hub package: @owner/name
        #[arg(required_unless_present = "command", conflicts_with = "command")]
        url: Option<String>,
        /// A stdio server Gatehouse hosts: the program to run (npx, uvx, a path)
        #[arg(long, value_name = "PROGRAM")]
        command: Option<String>,
        /// An argument of --command (repeatable, in order; -y and the like are fine)
        #[arg(
            long = "arg",
            value_name = "ARG",
            allow_hyphen_values = true,
            requires = "command"
        )]
        args: Vec<String>,
        /// An environment variable of --command (repeatable); secrets are set apart, with
        /// `gatehouse secrets set`, and reach the process as variables too
        #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Slug for the server, prefixing its tools (SLUG__tool) [default: derived from the URL]
        #[arg(long, value_name = "SLUG", value_parser = parse_slug)]
        name: Option<String>,
        #[command(flatten)]
        workspace: WorkspaceFlag,
        /// Header sent upstream, may reference secrets: 'Authorization: Bearer {{secrets.TOKEN}}'
        #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// How to reach the server [default: chosen by the control plane]
        #[arg(long, value_enum)]
        transport: Option<Transport>,
        /// How its tools are named to clients [default: prefixed]
        #[arg(long, value_enum)]
        naming: Option<Naming>,
        /// Only expose tools matching this glob (repeatable)
        #[arg(long, value_name = "GLOB")]
        allow: Vec<String>,
        /// Never expose tools matching this glob (repeatable)
        #[arg(long, value_name = "GLOB")]
        deny: Vec<String>,
        /// Only expose tools annotated readOnlyHint: true
        #[arg(long)]
        read_only: bool,
        /// Hub packages only: the version to install [default: the latest]
        #[arg(long, value_name = "V")]
        version: Option<String>,
        #[command(flatten)]
        limits: ServerLimitFlags,
    },
    /// Remove an MCP server from a workspace
    Remove {
        #[arg(value_parser = parse_slug)]
        slug: String,
        #[command(flatten)]
        workspace: WorkspaceFlag,
    },
    /// List a workspace's MCP servers
    List {
        #[command(flatten)]
        workspace: WorkspaceFlag,
    },
    /// Enable an MCP server: its tools reach the workspace's clients again
    Enable {
        #[arg(value_parser = parse_slug)]
        slug: String,
        #[command(flatten)]
        workspace: WorkspaceFlag,
    },
    /// Disable an MCP server: clients stop seeing its tools; it stays installed with its secrets
    Disable {
        #[arg(value_parser = parse_slug)]
        slug: String,
        #[command(flatten)]
        workspace: WorkspaceFlag,
    },
    /// Replace an MCP server's tool policy (what is not given is cleared; --open clears all)
    Policy {
        #[arg(value_parser = parse_slug)]
        slug: String,
        #[command(flatten)]
        workspace: WorkspaceFlag,
        /// Only expose tools matching this glob (repeatable)
        #[arg(long, value_name = "GLOB")]
        allow: Vec<String>,
        /// Never expose tools matching this glob (repeatable)
        #[arg(long, value_name = "GLOB")]
        deny: Vec<String>,
        /// Only expose tools annotated readOnlyHint: true
        #[arg(long)]
        read_only: bool,
        /// Expose every tool: no allow or deny globs, not read-only
        #[arg(long, conflicts_with_all = ["allow", "deny", "read_only"])]
        open: bool,
    },
    /// Replace what a stdio server runs: gatehouse mcp command fs -w WS npx -y PACKAGE DIR
    /// (its process is replaced)
    Command {
        #[arg(value_parser = parse_slug)]
        slug: String,
        #[command(flatten)]
        workspace: WorkspaceFlag,
        /// The program
        program: String,
        /// Its arguments, in order (everything after the program, dashes included)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Replace a stdio server's plain environment variables (none: clears them; its
    /// secrets are set apart, with `gatehouse secrets set`)
    Env {
        #[arg(value_parser = parse_slug)]
        slug: String,
        #[arg(value_name = "NAME=VALUE", value_parser = parse_env)]
        vars: Vec<(String, String)>,
        #[command(flatten)]
        workspace: WorkspaceFlag,
    },
    /// Set an MCP server's timeouts and cap on calls in flight (what is not given
    /// returns to its default; --defaults: all of them)
    Limits {
        #[arg(value_parser = parse_slug)]
        slug: String,
        #[command(flatten)]
        workspace: WorkspaceFlag,
        #[command(flatten)]
        limits: ServerLimitFlags,
        /// Every timeout and cap back to its default
        #[arg(long, conflicts_with_all = ["connect_timeout_ms", "first_byte_timeout_ms", "call_timeout_ms", "max_call_ms", "max_in_flight", "max_queued"])]
        defaults: bool,
    },
    /// Set how an MCP server's tools, prompts and resources are named to clients
    Naming {
        #[arg(value_parser = parse_slug)]
        slug: String,
        #[arg(value_enum)]
        naming: Naming,
        #[command(flatten)]
        workspace: WorkspaceFlag,
    },
    /// Shape an MCP server's tools for clients: rename, describe, fix arguments,
    /// annotate
    #[command(subcommand)]
    Tool(ToolCommand),
}

#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// Set how one tool is shown (replaces its override; --clear: as the server has it)
    Set {
        #[arg(value_parser = parse_slug)]
        workspace: String,
        #[arg(value_parser = parse_slug)]
        server: String,
        /// The tool's name as the server has it
        tool: String,
        /// The name clients see instead (still prefixed with the server's slug)
        #[arg(long, value_name = "NAME")]
        rename: Option<String>,
        /// Replace its description
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Append to its description
        #[arg(long, value_name = "TEXT")]
        extend_description: Option<String>,
        /// Set an argument on every call, hidden from clients (VALUE is JSON, or else
        /// a string): --fix-arg owner=acme (repeatable)
        #[arg(long = "fix-arg", value_name = "NAME=VALUE")]
        fix_arg: Vec<String>,
        /// Set an annotation: --annotate destructiveHint=true (repeatable)
        #[arg(long, value_name = "HINT=VALUE")]
        annotate: Vec<String>,
        /// Mark it read-only (readOnlyHint: true)
        #[arg(long)]
        read_only: bool,
        /// Mark it destructive (destructiveHint: true, readOnlyHint: false)
        #[arg(long, conflicts_with = "read_only")]
        destructive: bool,
        /// Remove its override
        #[arg(long, conflicts_with_all = ["rename", "description", "extend_description", "fix_arg", "annotate", "read_only", "destructive"])]
        clear: bool,
    },
}

/// A server's timeouts and cap on calls in flight; each one not given takes its default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerLimitFlags {
    /// How long connecting to the server may take [default: 5000]
    #[arg(long, value_name = "MS")]
    pub connect_timeout_ms: Option<u64>,
    /// How long a call waits for the server's reply to begin, connecting included
    /// [default: the call timeout]
    #[arg(long, value_name = "MS")]
    pub first_byte_timeout_ms: Option<u64>,
    /// How long the server may stay silent while a call is in flight [default: 300000]
    #[arg(long, value_name = "MS")]
    pub call_timeout_ms: Option<u64>,
    /// How long a call may take in all, however much its reply streams [default: 3600000]
    #[arg(long, value_name = "MS")]
    pub max_call_ms: Option<u64>,
    /// Calls one proxy sends the server at once, 0 for no cap [default: 256]
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Calls past that cap that wait for a place (at most the call timeout) [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_queued: Option<u32>,
}

impl ServerLimitFlags {
    /// The API's `limits` object: the flags given.
    pub fn json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (name, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_byte_timeout_ms", self.first_byte_timeout_ms),
            ("call_timeout_ms", self.call_timeout_ms),
            ("max_call_ms", self.max_call_ms),
            ("max_in_flight", self.max_in_flight.map(u64::from)),
            ("max_queued", self.max_queued.map(u64::from)),
        ] {
            if let Some(value) = value {
                out.insert(name.into(), value.into());
            }
        }
        serde_json::Value::Object(out)
    }

    pub fn is_empty(&self) -> bool {
        self.json().as_object().is_some_and(|m| m.is_empty())
    }
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set a secret for an MCP server (VALUE is prompted for, or read from stdin, when omitted)
    Set {
        #[arg(value_parser = parse_slug)]
        server: String,
        name: String,
        value: Option<String>,
        #[command(flatten)]
        workspace: WorkspaceFlag,
    },
    /// List secret names (values are never shown)
    List {
        #[command(flatten)]
        workspace: WorkspaceFlag,
    },
    /// Delete a secret
    Delete {
        #[arg(value_parser = parse_slug)]
        server: String,
        name: String,
        #[command(flatten)]
        workspace: WorkspaceFlag,
    },
}

/// Who may install a published package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Team,
    Private,
}

impl Visibility {
    /// The API's spelling.
    pub fn api_name(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Team => "team",
            Visibility::Private => "private",
        }
    }
}

/// The manifest's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PackageType {
    Skill,
    McpServer,
}

impl PackageType {
    /// The manifest's spelling.
    pub fn api_name(self) -> &'static str {
        match self {
            PackageType::Skill => "skill",
            PackageType::McpServer => "mcp-server",
        }
    }
}

/// `@owner/name`, as the registry names packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRef {
    pub owner: String,
    pub name: String,
    /// From `@owner/name@1.2.0`.
    pub version: Option<String>,
}

impl PackageRef {
    /// `@owner/name`, without any version.
    pub fn id(&self) -> String {
        format!("@{}/{}", self.owner, self.name)
    }
}

impl std::fmt::Display for PackageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "@{}/{}", self.owner, self.name)?;
        if let Some(version) = &self.version {
            write!(f, "@{version}")?;
        }
        Ok(())
    }
}

const SCHEMA_HELP: &str = "\
The manifest (gatehouse.json; `gatehouse skill init` writes an example):
  name         the package name, published as @<your username>/<name>
  type         \"skill\" (declarative HTTP tools) or \"mcp-server\" (a remote MCP server)
  version      semver, e.g. \"1.0.0\"; every publish must increase it
  description  one line shown by `skill search` and `skill list`
  category     developer-tools | productivity | communication | data | devops |
               security | search | finance | other
  tags         [\"crm\", ...], matched by `skill search`
  secrets      [{\"name\": \"CRM_TOKEN\", \"description\": \"...\"}], set per workspace after install
  tools        (skill) [{name, description, input_schema, read_only, request: {method,
               url, headers, body}, response: {pointer}}]; templates use {{args.X}}
               and {{secrets.NAME}}
  server       (mcp-server) {url, transport: streamable_http | sse, headers}";

#[derive(Debug, Subcommand)]
pub enum SkillCommand {
    /// Write an example gatehouse.json in the current directory
    Init {
        /// What the package is
        #[arg(long = "type", value_enum, default_value = "skill")]
        kind: PackageType,
        /// The package name [default: derived from the current directory]
        #[arg(long, value_parser = parse_slug)]
        name: Option<String>,
    },
    /// Publish the manifest (./gatehouse.json) as a new version of @you/NAME
    #[command(after_help = SCHEMA_HELP)]
    Publish {
        /// The manifest file
        #[arg(long, value_name = "PATH", default_value = "gatehouse.json")]
        manifest: PathBuf,
        /// Publish under this name instead of the manifest's
        #[arg(long)]
        name: Option<String>,
        /// `--private team`: only your team may install it; `--private`: only you [default: public]
        #[arg(
            long,
            value_name = "team",
            num_args = 0..=1,
            default_missing_value = "private",
            value_parser = parse_private
        )]
        private: Option<Visibility>,
    },
    /// List your packages and those of the teams you belong to
    List,
    /// Search public packages by name, description and tags
    Search {
        /// Words to look for
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// List the published versions of a package
    Versions {
        /// @owner/name
        #[arg(value_parser = parse_package_ref)]
        package: PackageRef,
    },
    /// Install a package into a workspace
    #[command(disable_version_flag = true)]
    Install {
        /// @owner/name, or @owner/name@VERSION
        #[arg(value_parser = parse_package_ref)]
        package: PackageRef,
        #[command(flatten)]
        workspace: WorkspaceFlag,
        /// The version to install [default: the latest]
        #[arg(long, value_name = "V")]
        version: Option<String>,
        /// Slug for the installed server, prefixing its tools (SLUG__tool) [default: the package name]
        #[arg(long, value_name = "SLUG", value_parser = parse_slug)]
        name: Option<String>,
    },
    /// Withdraw a package (every version, or one with --version)
    #[command(disable_version_flag = true)]
    Unpublish {
        /// @owner/name
        #[arg(value_parser = parse_package_ref)]
        package: PackageRef,
        /// Only this version
        #[arg(long, value_name = "V")]
        version: Option<String>,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// Invite someone by email; prints (or emails) their join code
    Invite { email: String },
    /// List your team's members and pending invitations
    List,
    /// Join a team with the code from an invitation
    Accept { code: String },
    /// Remove a member (or cancel an invitation); their installs of your team packages are removed
    Remove {
        /// The member's email or username
        member: String,
    },
}

/// `--private` alone means private; `--private team` means team.
fn parse_private(text: &str) -> Result<Visibility, String> {
    match text {
        "team" => Ok(Visibility::Team),
        "private" => Ok(Visibility::Private),
        other => Err(format!(
            "invalid --private {other:?}: use `--private team` (your team) or `--private` alone (only you)"
        )),
    }
}

/// `@owner/name`, also `owner/name` and `@owner/name@1.2.0`.
pub fn parse_package_ref(text: &str) -> Result<PackageRef, String> {
    let invalid = || format!("invalid package {text:?}: expected @owner/name");
    let trimmed = text.strip_prefix('@').unwrap_or(text);
    let (owner, rest) = trimmed.split_once('/').ok_or_else(invalid)?;
    let (name, version) = match rest.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (rest, None),
    };
    let part_ok = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !part_ok(owner) || !part_ok(name) {
        return Err(invalid());
    }
    if version.is_some_and(|v| v.is_empty() || v.chars().any(char::is_whitespace)) {
        return Err(format!(
            "invalid package {text:?}: expected @owner/name@VERSION, e.g. @acme/crm@1.2.0"
        ));
    }
    Ok(PackageRef {
        owner: owner.to_owned(),
        name: name.to_owned(),
        version: version.map(str::to_owned),
    })
}

/// Workspace and server slugs: `^[a-z0-9][a-z0-9-]{0,31}$` (never `_`, which
/// separates server and tool in `SLUG__tool`). A rejected value comes with the
/// slug the control plane would derive from it, as a hint.
pub fn parse_slug(text: &str) -> Result<String, String> {
    if is_valid_slug(text) {
        return Ok(text.to_owned());
    }
    let mut message = format!(
        "invalid slug {text:?}: use 1-32 lowercase letters, digits and '-', starting with a letter or digit"
    );
    let suggestion = slugify(text);
    if !suggestion.is_empty() && suggestion != text {
        message += &format!(" (did you mean {suggestion:?}?)");
    }
    Err(message)
}

/// `Name: value` -> (`Name`, `value`); the value may itself contain colons.
/// `NAME=VALUE` of `mcp install --env`.
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid --env {text:?}: expected NAME=VALUE"))?;
    let mut bytes = name.bytes();
    let valid = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!(
            "invalid --env {text:?}: {name:?} must match ^[A-Za-z_][A-Za-z0-9_]*$"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("invalid header {text:?}: expected 'Name: value'"))?;
    let name = name.trim();
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_name {
        return Err(format!(
            "invalid header {text:?}: {name:?} is not a valid header name"
        ));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

fn parse_lifetime(text: &str) -> Result<u64, String> {
    match parse_duration(text)? {
        0 => Err("--expires-in must be at least 1 second".to_owned()),
        secs => Ok(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("gatehouse").chain(args.iter().copied()))
    }

    #[test]
    fn the_store_is_chosen_by_flag_and_migrate_takes_both_ends() {
        let cli = parse(&["serve", "--database", "postgres://gh@db/gatehouse"]).unwrap();
        match cli.command {
            Command::Serve(serve) => {
                assert_eq!(
                    serve.database.as_deref(),
                    Some("postgres://gh@db/gatehouse")
                )
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["up", "--database", "postgres://gh@db/gatehouse"]).unwrap();
        assert!(matches!(cli.command, Command::Up(up) if up.database.is_some()));
        let cli = parse(&["migrate", "--from", "/data", "--to", "postgres://gh@db/g"]).unwrap();
        match cli.command {
            Command::Migrate(m) => {
                assert_eq!(m.from, PathBuf::from("/data"));
                assert_eq!(m.to, "postgres://gh@db/g");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["migrate", "--to", "postgres://gh@db/g"]).is_err());
    }

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn slugs_follow_the_product_rules() {
        for ok in ["engineering", "client-acme", "a", "0x", &"a".repeat(32)] {
            assert_eq!(parse_slug(ok), Ok(ok.to_string()));
        }
        for bad in ["", "-a", "Eng", "a_b", "a b", &"a".repeat(33), "é"] {
            assert!(parse_slug(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_slug("Engineering").unwrap_err(),
            "invalid slug \"Engineering\": use 1-32 lowercase letters, digits and '-', starting with a letter or digit (did you mean \"engineering\"?)"
        );
    }

    #[test]
    fn slugify_derives_like_the_examples() {
        assert_eq!(slugify("Engineering"), "engineering");
        assert_eq!(slugify("Acme Corp"), "acme-corp");
        assert_eq!(slugify("  GitHub / MCP!! "), "github-mcp");
        assert_eq!(slugify("github_mcp"), "github-mcp");
        assert_eq!(slugify("!!!"), "");
        assert_eq!(slugify(&format!("{}-b", "a".repeat(31))), "a".repeat(31));
    }

    #[test]
    fn headers_split_on_the_first_colon() {
        assert_eq!(
            parse_header("Authorization: Bearer {{secrets.GITHUB_TOKEN}}"),
            Ok((
                "Authorization".into(),
                "Bearer {{secrets.GITHUB_TOKEN}}".into()
            ))
        );
        assert_eq!(
            parse_header("X-Url:http://a:1"),
            Ok(("X-Url".into(), "http://a:1".into()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": v").is_err());
        assert!(parse_header("Bad Name: v").is_err());
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = parse(&["workspace", "list", "--json", "--api", "http://h:1"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.api.as_deref(), Some("http://h:1"));
        assert!(matches!(
            cli.command,
            Command::Workspace(WorkspaceCommand::List)
        ));
    }

    #[test]
    fn token_create_takes_workspace_name_and_lifetime() {
        let cli = parse(&[
            "workspace",
            "token",
            "create",
            "engineering",
            "--name",
            "Alice",
            "--expires-in",
            "86400",
            "--tools",
            "github__list_*",
            "--tools",
            "jira__*",
            "--read-only",
        ])
        .unwrap();
        match cli.command {
            Command::Workspace(WorkspaceCommand::Token(TokenCommand::Create {
                workspace,
                name,
                expires_in,
                tools,
                read_only,
            })) => {
                assert_eq!(workspace.as_deref(), Some("engineering"));
                assert_eq!(name, "Alice");
                assert_eq!(expires_in, Some(86_400));
                assert_eq!(tools, ["github__list_*", "jira__*"]);
                assert!(read_only);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&[
            "workspace",
            "token",
            "create",
            "e",
            "--name",
            "A",
            "--expires-in",
            "0"
        ])
        .is_err());
        assert!(parse(&["workspace", "token", "create", "e"]).is_err());
    }

    #[test]
    fn token_revoke_needs_exactly_one_of_name_or_id() {
        assert!(parse(&[
            "workspace",
            "token",
            "revoke",
            "eng",
            "--name",
            "Alice Cursor"
        ])
        .is_ok());
        assert!(parse(&["workspace", "token", "revoke", "eng", "--id", "7"]).is_ok());
        assert!(parse(&["workspace", "token", "revoke", "eng"]).is_err());
        assert!(parse(&[
            "workspace",
            "token",
            "revoke",
            "eng",
            "--name",
            "a",
            "--id",
            "7"
        ])
        .is_err());
    }

    #[test]
    fn audit_parses_since() {
        let cli = parse(&[
            "workspace",
            "audit",
            "acme-team",
            "--since",
            "1h",
            "--action",
            "tool_call",
        ])
        .unwrap();
        match cli.command {
            Command::Workspace(WorkspaceCommand::Audit {
                workspace,
                since,
                action,
                user,
                after: None,
            }) => {
                assert_eq!(workspace.as_deref(), Some("acme-team"));
                assert_eq!(since, Some(Since::Ago(3_600)));
                assert_eq!(action.as_deref(), Some("tool_call"));
                assert_eq!(user, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["workspace", "audit", "--since", "soon"]).is_err());
    }

    #[test]
    fn analytics_defaults_to_the_last_day() {
        let cli = parse(&["workspace", "analytics", "acme-team"]).unwrap();
        match cli.command {
            Command::Workspace(WorkspaceCommand::Analytics { workspace, since }) => {
                assert_eq!(workspace.as_deref(), Some("acme-team"));
                assert_eq!(since, Since::Ago(86_400));
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["workspace", "analytics", "--since", "2026-03-07"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Workspace(WorkspaceCommand::Analytics {
                since: Since::At(1_772_841_600),
                ..
            })
        ));
    }

    #[test]
    fn mcp_enable_disable_and_policy_change_a_server_in_place() {
        let cli = parse(&["mcp", "disable", "github", "-w", "engineering"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Mcp(McpCommand::Disable { ref slug, ref workspace })
                if slug == "github" && workspace.workspace.as_deref() == Some("engineering")
        ));
        assert!(matches!(
            parse(&["mcp", "enable", "github"]).unwrap().command,
            Command::Mcp(McpCommand::Enable { .. })
        ));
        assert!(parse(&["mcp", "enable", "git_hub"]).is_err());
        let cli = parse(&[
            "mcp",
            "policy",
            "github",
            "--allow",
            "list_*",
            "--allow",
            "get_*",
            "--deny",
            "get_secret",
            "--read-only",
        ])
        .unwrap();
        match cli.command {
            Command::Mcp(McpCommand::Policy {
                slug,
                allow,
                deny,
                read_only,
                open,
                ..
            }) => {
                assert_eq!(slug, "github");
                assert_eq!(allow, ["list_*", "get_*"]);
                assert_eq!(deny, ["get_secret"]);
                assert!(read_only && !open);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["mcp", "policy", "github", "--open"]).is_ok());
        assert!(parse(&["mcp", "policy", "github", "--open", "--read-only"]).is_err());
    }

    #[test]
    fn mcp_install_collects_headers_and_transport() {
        let cli = parse(&[
            "mcp",
            "install",
            "https://example.com/mcp",
            "--name",
            "github-mcp",
            "-w",
            "engineering",
            "--header",
            "Authorization: Bearer {{secrets.GITHUB_TOKEN}}",
            "-H",
            "X-Team: core",
            "--transport",
            "sse",
        ])
        .unwrap();
        match cli.command {
            Command::Mcp(McpCommand::Install {
                url,
                name,
                workspace,
                headers,
                transport,
                ..
            }) => {
                assert_eq!(url.as_deref(), Some("https://example.com/mcp"));
                assert_eq!(name.as_deref(), Some("github-mcp"));
                assert_eq!(workspace.workspace.as_deref(), Some("engineering"));
                assert_eq!(headers.len(), 2);
                assert_eq!(headers[1], ("X-Team".into(), "core".into()));
                assert_eq!(transport.map(Transport::api_name), Some("sse"));
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["mcp", "install", "u", "--transport", "streamable-http"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Mcp(McpCommand::Install {
                transport: Some(Transport::StreamableHttp),
                ..
            })
        ));
        assert!(parse(&["mcp", "install", "u", "--name", "git_hub"]).is_err());
    }

    #[test]
    fn mcp_install_takes_a_command_with_arguments_and_environment() {
        let cli = parse(&[
            "mcp",
            "install",
            "--name",
            "fs",
            "--command",
            "npx",
            "--arg",
            "-y",
            "--arg",
            "@modelcontextprotocol/server-filesystem",
            "--arg",
            "/srv/shared",
            "--env",
            "LOG_LEVEL=debug=verbose",
        ])
        .unwrap();
        match cli.command {
            Command::Mcp(McpCommand::Install {
                url,
                command,
                args,
                env,
                ..
            }) => {
                assert_eq!(url, None);
                assert_eq!(command.as_deref(), Some("npx"));
                assert_eq!(
                    args,
                    [
                        "-y",
                        "@modelcontextprotocol/server-filesystem",
                        "/srv/shared"
                    ]
                );
                assert_eq!(env, [("LOG_LEVEL".into(), "debug=verbose".into())]);
            }
            other => panic!("{other:?}"),
        }
        // A URL or a command, not both, not neither.
        assert!(parse(&["mcp", "install", "http://u/mcp", "--command", "npx"]).is_err());
        assert!(parse(&["mcp", "install"]).is_err());
        assert!(parse(&["mcp", "install", "--command", "x", "--env", "1A=b"]).is_err());
    }

    #[test]
    fn up_has_the_documented_defaults() {
        let cli = parse(&["up", "--demo"]).unwrap();
        match cli.command {
            Command::Up(up) => {
                assert!(up.demo);
                assert_eq!(up.api_listen.to_string(), "127.0.0.1:7070");
                assert_eq!(up.listen.to_string(), "127.0.0.1:8080");
                assert_eq!(up.admin_listen.to_string(), "127.0.0.1:9090");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["up", "--listen", "nonsense"]).is_err());
    }

    #[test]
    fn secrets_value_is_optional_for_prompting() {
        let cli = parse(&["secrets", "set", "github-mcp", "GITHUB_TOKEN"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Secrets(SecretsCommand::Set { value: None, .. })
        ));
        assert!(parse(&[
            "secrets",
            "set",
            "github-mcp",
            "GITHUB_TOKEN",
            "v",
            "--workspace",
            "personal"
        ])
        .is_ok());
    }

    #[test]
    fn workspace_delete_accepts_yes() {
        let cli = parse(&["workspace", "delete", "client-acme", "--yes"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Workspace(WorkspaceCommand::Delete { yes: true, .. })
        ));
        assert!(parse(&["workspace", "delete", "Client Acme"]).is_err());
    }

    #[test]
    fn package_refs_parse() {
        let crm = parse_package_ref("@acme/internal-crm-skill").unwrap();
        assert_eq!(crm.owner, "acme");
        assert_eq!(crm.name, "internal-crm-skill");
        assert_eq!(crm.version, None);
        assert_eq!(crm.id(), "@acme/internal-crm-skill");
        // The seed's onboarding script installs `johndoe/github-skill`.
        assert_eq!(
            parse_package_ref("johndoe/github-skill").unwrap().id(),
            "@johndoe/github-skill"
        );
        let pinned = parse_package_ref("@acme/crm@1.2.0").unwrap();
        assert_eq!(pinned.version.as_deref(), Some("1.2.0"));
        assert_eq!(pinned.to_string(), "@acme/crm@1.2.0");
        for bad in [
            "",
            "@acme",
            "acme",
            "@/crm",
            "@acme/",
            "@acme/a/b",
            "@acme/crm@",
            "@a b/c",
        ] {
            assert!(parse_package_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn publish_visibility_follows_the_seed() {
        let visibility = |args: &[&str]| match parse(args).unwrap().command {
            Command::Skill(SkillCommand::Publish { private, .. }) => private,
            other => panic!("{other:?}"),
        };
        assert_eq!(visibility(&["skill", "publish"]), None);
        assert_eq!(
            visibility(&[
                "skill",
                "publish",
                "--name",
                "internal-crm-skill",
                "--private",
                "team"
            ]),
            Some(Visibility::Team)
        );
        assert_eq!(
            visibility(&["skill", "publish", "--name", "my-dev-tool", "--private"]),
            Some(Visibility::Private)
        );
        assert_eq!(
            visibility(&["skill", "publish", "--private", "--name", "x"]),
            Some(Visibility::Private)
        );
        assert!(parse(&["skill", "publish", "--private", "everyone"]).is_err());
        match parse(&["skill", "publish", "--manifest", "pkg/gatehouse.json"])
            .unwrap()
            .command
        {
            Command::Skill(SkillCommand::Publish { manifest, name, .. }) => {
                assert_eq!(manifest, PathBuf::from("pkg/gatehouse.json"));
                assert_eq!(name, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skill_install_takes_workspace_version_and_slug() {
        let cli = parse(&[
            "skill",
            "install",
            "@acme/internal-crm-skill",
            "--workspace",
            "acme-team",
            "--version",
            "1.2.0",
            "--name",
            "crm",
        ])
        .unwrap();
        match cli.command {
            Command::Skill(SkillCommand::Install {
                package,
                workspace,
                version,
                name,
            }) => {
                assert_eq!(package.id(), "@acme/internal-crm-skill");
                assert_eq!(workspace.workspace.as_deref(), Some("acme-team"));
                assert_eq!(version.as_deref(), Some("1.2.0"));
                assert_eq!(name.as_deref(), Some("crm"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["skill", "install", "not-a-package"]).is_err());
        assert!(parse(&["skill", "install", "@acme/crm", "--name", "Bad_Slug"]).is_err());
        // The crate's own version flag still works at the top.
        assert_eq!(
            parse(&["--version"]).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayVersion
        );
    }

    #[test]
    fn mcp_command_and_env_replace_what_a_stdio_server_runs() {
        match parse(&[
            "mcp", "command", "fs", "-w", "eng", "npx", "-y", "pkg", "--flag",
        ])
        .unwrap()
        .command
        {
            Command::Mcp(McpCommand::Command {
                slug,
                workspace,
                program,
                args,
            }) => {
                assert_eq!(slug, "fs");
                assert_eq!(workspace.workspace.as_deref(), Some("eng"));
                assert_eq!(program, "npx");
                assert_eq!(args, ["-y", "pkg", "--flag"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["mcp", "env", "fs", "A=1", "B=x=y"])
            .unwrap()
            .command
        {
            Command::Mcp(McpCommand::Env { vars, .. }) => {
                assert_eq!(vars, [("A".into(), "1".into()), ("B".into(), "x=y".into())]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["mcp", "env", "fs", "NOEQUALS"]).is_err());
    }

    #[test]
    fn mcp_install_takes_a_version_for_hub_packages() {
        match parse(&["mcp", "install", "@gatehouse/github", "--version", "1.0.0"])
            .unwrap()
            .command
        {
            Command::Mcp(McpCommand::Install { url, version, .. }) => {
                assert_eq!(url.as_deref(), Some("@gatehouse/github"));
                assert_eq!(version.as_deref(), Some("1.0.0"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skill_commands_parse() {
        assert!(matches!(
            parse(&["skill", "init", "--type", "mcp-server"])
                .unwrap()
                .command,
            Command::Skill(SkillCommand::Init {
                kind: PackageType::McpServer,
                name: None
            })
        ));
        assert!(matches!(
            parse(&["skill", "init"]).unwrap().command,
            Command::Skill(SkillCommand::Init {
                kind: PackageType::Skill,
                ..
            })
        ));
        assert!(parse(&["skill", "init", "--type", "plugin"]).is_err());
        match parse(&["skill", "search", "crm", "lookup"])
            .unwrap()
            .command
        {
            Command::Skill(SkillCommand::Search { text }) => assert_eq!(text, ["crm", "lookup"]),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["skill", "search"]).is_err());
        assert!(parse(&["skill", "versions", "@acme/crm"]).is_ok());
        assert!(matches!(
            parse(&[
                "skill",
                "unpublish",
                "@acme/crm",
                "--version",
                "1.0.0",
                "-y"
            ])
            .unwrap()
            .command,
            Command::Skill(SkillCommand::Unpublish { yes: true, .. })
        ));
        assert!(matches!(
            parse(&["skill", "list"]).unwrap().command,
            Command::Skill(SkillCommand::List)
        ));
    }

    #[test]
    fn team_commands_parse() {
        assert!(matches!(
            parse(&["team", "invite", "alice@acme.com"])
                .unwrap()
                .command,
            Command::Team(TeamCommand::Invite { .. })
        ));
        assert!(matches!(
            parse(&["team", "list"]).unwrap().command,
            Command::Team(TeamCommand::List)
        ));
        assert!(matches!(
            parse(&["team", "accept", "CODE"]).unwrap().command,
            Command::Team(TeamCommand::Accept { .. })
        ));
        assert!(matches!(
            parse(&["team", "remove", "alice"]).unwrap().command,
            Command::Team(TeamCommand::Remove { .. })
        ));
        assert!(parse(&["team", "invite"]).is_err());
    }
}
