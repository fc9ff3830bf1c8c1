//! The skills registry, teams and the Hub as users meet them: `gatehouse serve`, a
//! `gatehouse-proxy` fed by it, three users (acme, alice, mallory) each driving the
//! `gatehouse` CLI with their own login, a recording HTTP server standing in for the
//! internal APIs skills call, and rmcp clients calling those skills through the proxy.
//!
//! One test binary, one module per concern; the shared set-up is in `fixture`.

#[path = "registry/fixture.rs"]
mod fixture;
#[path = "registry/hub.rs"]
mod hub;
#[path = "registry/manifest.rs"]
mod manifest;
#[path = "registry/skill_calls.rs"]
mod skill_calls;
#[path = "registry/team_skills.rs"]
mod team_skills;
#[path = "registry/teams.rs"]
mod teams;
#[path = "registry/versions.rs"]
mod versions;
