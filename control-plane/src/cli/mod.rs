//! The `gatehouse` command line: runs the gateway (`up`, `serve`) and is the
//! admin API's client for everything else. Output is text shaped like the seeds, or
//! the API's JSON with `--json`; failures print `error: ...` on stderr and exit
//! with a code scripts can branch on (see [`error::CliError::exit_code`]).

mod analytics;
mod api;
mod args;
mod error;
mod launch;
mod limits;
mod manifest;
mod packages;
mod prompt;
mod render;
mod resources;
mod servers;
mod session;
mod team;
mod workspaces;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use error::CliError;

use args::{Cli, Command, SkillCommand, UserCommand};
use session::Context;

/// Entry point called by the `gatehouse` binary.
pub fn main() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap exits 2 on usage errors; 2 means "API error" here.
            let _ = err.print();
            return Ok(ExitCode::from(if err.use_stderr() { 1 } else { 0 }));
        }
    };
    match run(cli) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            eprintln!("{}", err.report());
            Ok(err.into())
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Up(args) => launch::up(args),
        Command::Serve(args) => launch::serve(args),
        Command::Migrate(args) => launch::migrate(args),
        // Local only: works before any login, and with a broken state file.
        Command::Skill(SkillCommand::Init { kind, name }) => {
            print_stdout(&packages::init(cli.json, kind, name)?);
            Ok(())
        }
        command => {
            let repair = matches!(command, Command::Login(_));
            let mut ctx = Context::load(cli.api.as_deref(), cli.json, repair)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| {
                    CliError::Local(anyhow::anyhow!("cannot start the async runtime: {err}"))
                })?;
            let text = runtime.block_on(dispatch(&mut ctx, command))?;
            print_stdout(&text);
            Ok(())
        }
    }
}

async fn dispatch(ctx: &mut Context, command: Command) -> Result<String, CliError> {
    match command {
        Command::Login(args) => session::login(ctx, args.username, args.credential).await,
        Command::Logout => session::logout(ctx).await,
        Command::Whoami => session::whoami(ctx).await,
        Command::User(UserCommand::Create { name, email, admin }) => {
            session::create_user(ctx, name, email, admin).await
        }
        Command::Workspace(command) => workspaces::run(ctx, command).await,
        Command::Mcp(command) => servers::mcp(ctx, command).await,
        Command::Secrets(command) => servers::secrets(ctx, command).await,
        Command::Proxies => servers::proxies(ctx).await,
        Command::Skill(command) => packages::run(ctx, command).await,
        Command::Team(command) => team::run(ctx, command).await,
        Command::Up(_) | Command::Serve(_) | Command::Migrate(_) => Err(CliError::usage(
            "up, serve and migrate run on the gateway's machine; they are not client commands",
        )),
    }
}

/// A closed pipe (`gatehouse workspace list | head -1`) is not an error worth a panic.
fn print_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
