//! The command line, defined once: help, the man page and shell completions all come from
//! these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit;

/// `cutover --version`; a build with the test hooks says so, and the tests that need them
/// check it.
#[cfg(not(feature = "test-hooks"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(feature = "test-hooks")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (test hooks)");

/// Upgrades of self-hosted, stateful container applications, run as code: preflight,
/// quiesce, a restore point of the data, the upgrade, verification — and an automatic revert
/// of images and data when anything fails.
#[derive(Debug, Clone, Parser)]
#[command(name = "cutover", version = VERSION, after_long_help = exit::TABLE, propagate_version = true)]
pub struct Cli {
    /// The stack file.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        default_value = "cutover.yaml",
        env = "CUTOVER_FILE"
    )]
    pub file: PathBuf,

    /// The environment overlay to apply (a key of `environments:` in the stack file).
    #[arg(long = "env", global = true, value_name = "NAME", env = "CUTOVER_ENV")]
    pub environment: Option<String>,

    /// A compose profile to activate for `include_compose` (repeatable; with
    /// COMPOSE_PROFILES).
    #[arg(long = "profile", global = true, value_name = "NAME")]
    pub profiles: Vec<String>,

    /// Where releases, the journal and restore points are kept [default: .cutover/ beside the
    /// stack file].
    #[arg(long, global = true, value_name = "DIR", env = "CUTOVER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// When to color the output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For scripts: a documented, stable schema.
    Json,
    /// A checklist to paste into a ticket (`plan` only).
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Overrides for a one-off upgrade.
#[derive(Debug, Args, Default, Clone)]
pub struct SetArgs {
    /// Override a value: SERVICE.image=REF, SERVICE.strategy=S, SERVICE.env.KEY=VALUE or
    /// vars.NAME=VALUE. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ConfirmArgs {
    /// Do not ask for confirmation. Required when not on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Why: recorded with the release.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RestorePointsAction {
    /// Every restore point: release, data set, status, size, schema version.
    List,
    /// `pg_dump -Fd` of PostgreSQL restore points (the same-server copies) into the state
    /// dir: a copy that survives the copy's loss. Run it after an upgrade.
    Dump {
        /// The release whose restore points to dump (default: the newest).
        release: Option<u64>,
    },
    /// Check restore points against their manifests (all, or those of one release).
    Verify {
        /// The release whose restore points to check.
        release: Option<u64>,
    },
    /// Remove restore points of all but the newest N releases, and the failed copies reverts
    /// kept for inspection. The live release's restore point (the data to go back to) is
    /// always kept.
    Prune {
        /// How many releases' restore points to keep.
        #[arg(long, default_value_t = 3)]
        keep: usize,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataChoice {
    Restore,
    Keep,
}

#[derive(Debug, Clone, Subcommand)]
pub enum MaintenanceAction {
    /// 503 + Retry-After with the stack's maintenance page.
    On {
        /// The message on the page.
        #[arg(long)]
        message: Option<String>,
        /// Only this service's routes (default: every route of the stack).
        #[arg(long)]
        service: Option<String>,
        /// How long clients should wait before trying again (also "expected back").
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
        retry_after: std::time::Duration,
    },
    /// Traffic flows again.
    Off {
        /// Only this service's routes.
        #[arg(long)]
        service: Option<String>,
    },
    /// Each routed service: serving or in maintenance, its upstreams, held or not.
    Status,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Check the stack file and report every problem with its file:line:column.
    Validate,

    /// Show what an apply would do: changes, restore points, the procedure, the revert.
    Plan {
        #[command(flatten)]
        set: SetArgs,
    },

    /// Upgrade the stack to what the stack file says, reverting on failure.
    Apply {
        #[command(flatten)]
        set: SetArgs,
        /// Go on although a new image no longer accepts settings the stack sets (its
        /// `io.cutover.settings.accepted` label); they are listed in the journal.
        #[arg(long)]
        ack_settings: bool,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },

    /// What runs now: the live release, each service's containers, the lease, unfinished
    /// operations.
    Status,

    /// Upgrade one `strategy: manual` service that the live release left on its old image.
    UpgradeService {
        /// The service.
        service: String,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },

    /// Remove the stack's containers and network. Volumes and the state (releases, journal)
    /// are kept unless asked.
    Down {
        /// Also remove the named volumes the stack's containers mounted.
        #[arg(long)]
        volumes: bool,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },

    /// The releases of the stack, newest first.
    History {
        /// How many releases to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Show this operation's journal instead: every step, its status, time and output.
        #[arg(long, value_name = "OP")]
        operation: Option<u64>,
    },

    /// Go back to a recorded release (the previous one by default).
    Rollback {
        /// The release to go back to.
        revision: Option<u64>,
        /// `restore`: put the data back as it was in that release too (from the restore
        /// point taken when the stack moved on from it; refused when there is none).
        /// `keep`: images only, the data stays as it is.
        #[arg(long, value_enum, default_value_t = DataChoice::Keep)]
        data: DataChoice,
        /// Restore PostgreSQL data from the restore point's dump (`restore-points dump`), not
        /// its same-server copy (used anyway when the copy is gone).
        #[arg(long)]
        from_dump: bool,
        /// Correct a value the target release recorded, for this rollback:
        /// SERVICE.stop_grace=DURATION, SERVICE.health.deadline=DURATION or
        /// SERVICE.env.KEY=VALUE (its images stay the recorded IDs). Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },

    /// Continue, or revert, an operation that was interrupted (cutover itself crashed).
    Resume {
        /// Do not ask for confirmation. Required when not on a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Approve an operation waiting at an approval step; not by the one who started it.
    Approve {
        /// The operation (default: the one running).
        operation: Option<u64>,
    },

    /// Stop the running operation at the next step boundary and revert it; revert an
    /// interrupted one.
    Abort {
        /// Do not ask for confirmation (reverting an interrupted operation). Required when
        /// not on a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Run the stack's traffic proxy (routes from `traffic:`), in the foreground.
    Serve {
        /// Log every request as a JSON line on stderr.
        #[arg(long)]
        access_log: bool,
        /// Also serve the Prometheus metrics (`GET /metrics`, nothing else) over plain HTTP
        /// on ADDR, e.g. 127.0.0.1:9464, for a scraper; the control socket serves them too.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },

    /// Continuous delivery from git: each new commit of the branch that holds the stack file
    /// is planned and applied, the release naming the commit. A reverted release pauses the
    /// watch until `--ack` (and, with `watch: { git_revert: true }`, its commit is reverted in
    /// git and pushed). Needs --state-dir: the watch keeps its clone and state there.
    Watch {
        /// The repository: a path or a file:// URL.
        #[arg(long, value_name = "REPO", required_unless_present = "images")]
        git: Option<String>,
        /// Poll the registry of each service with an `update` policy for the newest tag it
        /// allows: applied (the stack file given with -f), or, with --git, committed to the
        /// branch and then applied.
        #[arg(long)]
        images: bool,
        /// The branch whose commits are applied.
        #[arg(long, default_value = "main")]
        branch: String,
        /// The stack file's path in the repository.
        #[arg(long, default_value = "cutover.yaml")]
        path: PathBuf,
        /// One pass, then exit with the pass's code (for cron and tests).
        #[arg(long)]
        once: bool,
        /// Lift the pause a reverted or failed release left, then exit.
        #[arg(long)]
        ack: bool,
        /// Time between passes.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },

    /// The web dashboard for a team: the stacks of this host, live operations, plans,
    /// approvals by role, history with rollback, restore points and the audit log; an HTTP
    /// API under /api/v1 (docs/dashboard.md). Sign in as a user (`cutover user add`) or with
    /// a token (`cutover token create`).
    Dashboard {
        /// Where to listen (loopback unless said otherwise).
        #[arg(long, default_value = "127.0.0.1:8700", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// A stack file to serve (repeatable) [default: the stack file, -f].
        #[arg(long = "stack", value_name = "FILE")]
        stack_files: Vec<PathBuf>,
        /// Serve every stack file in DIR: DIR/*/cutover.yaml and DIR/*.cutover.yaml.
        #[arg(long = "stacks", value_name = "DIR")]
        stacks_dir: Option<PathBuf>,
        #[command(flatten)]
        home: HomeArg,
        /// Serve HTTPS with this certificate chain (PEM); cookies are then `Secure`.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Sign people in by this header, set by an authenticating reverse proxy
        /// (oauth2-proxy: X-Forwarded-User; Authelia: Remote-User). Off unless given.
        #[arg(long, value_name = "HEADER")]
        trusted_header: Option<String>,
        /// The proxy addresses the header is believed from (repeatable).
        #[arg(long, value_name = "IP", default_values = ["127.0.0.1", "::1"])]
        trusted_proxy: Vec<std::net::IpAddr>,
        /// The role of a name the header gives that is not a local user.
        #[arg(long, value_name = "ROLE", default_value = "viewer")]
        trusted_default_role: String,
    },

    /// The dashboard's users: add (the password is read from stdin), remove, list.
    User {
        #[command(subcommand)]
        action: UserAction,
    },

    /// The dashboard's API tokens (`Authorization: Bearer …`): create, revoke.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },

    /// The maintenance page: on, off, status.
    Maintenance {
        #[command(subcommand)]
        action: MaintenanceAction,
    },

    /// The restore points of the stack's data: list, verify, prune.
    RestorePoints {
        #[command(subcommand)]
        action: RestorePointsAction,
    },

    /// Remove the stack's lease. Only for a lease whose holder is known to be gone.
    Unlock {
        /// Remove the lease even if its holder may still be alive.
        #[arg(long)]
        force: bool,
    },

    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff).
    Man,
}

/// The dashboard's own directory: its users, tokens, sessions and audit log.
#[derive(Debug, Args, Clone)]
pub struct HomeArg {
    /// [default: $XDG_STATE_HOME/cutover/dashboard, else ~/.local/state/cutover/dashboard]
    #[arg(long = "home", value_name = "DIR", env = "CUTOVER_DASHBOARD_HOME")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand, Clone)]
pub enum UserAction {
    /// Add a user, or change one's role and password. The password is read from stdin (the
    /// first line).
    Add {
        name: String,
        /// viewer, operator (plan, apply, rollback, maintenance), approver, admin.
        #[arg(long)]
        role: String,
        /// No password: the user signs in only through the trusted proxy's header.
        #[arg(long)]
        no_password: bool,
        #[command(flatten)]
        home: HomeArg,
    },
    /// Remove a user and end their sessions.
    Remove {
        name: String,
        #[command(flatten)]
        home: HomeArg,
    },
    /// The users and their roles.
    List {
        #[command(flatten)]
        home: HomeArg,
    },
}

#[derive(Debug, Subcommand, Clone)]
pub enum TokenAction {
    /// Create a token and print it, once (only its hash is kept).
    Create {
        name: String,
        /// viewer, operator, approver or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        #[command(flatten)]
        home: HomeArg,
    },
    /// Revoke a token.
    Revoke {
        name: String,
        #[command(flatten)]
        home: HomeArg,
    },
}
